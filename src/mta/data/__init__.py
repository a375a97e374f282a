"""Data for `mta`: the toy-task generator (spec §5), bAbI-style QA stories (babi), text corpora and token shards."""
