"""Data for `mta`: the toy-task generator (docs/spec.md §5), bAbI-style QA stories (babi), text corpora and token
shards."""
