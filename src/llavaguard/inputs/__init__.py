"""What llavaguard reads: images (decoded safely), sources of many images (folders, lists,
tables, tar shards, Hugging Face datasets) and tables of rows. Nothing here knows about
models or policies."""
