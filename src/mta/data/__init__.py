"""Data for `mta`: the toy-task generator (spec §5) and, later, text corpora and token shards."""
