"""Pieces every dataset converter shares (one job per module):

    report.py       Report (read / converted / rejected / skipped, the accounting check), summary_text
    ids.py          IdRegistry: a repeated id is a duplicate row or gets `-dupN`
    text.py         clean_text, yes_no (the project's answer rule), reserved_tag_problem
    splits.py       canonical_split, split_from_name, resolve_split
    image_paths.py  ImageResolver (image names under --image_root, path safety, one check per path), image_size
    image_store.py  ImageStore: embedded image bytes written once, named by content hash
    inputs.py       expand_inputs, read_json_list, iter_table (parquet / JSONL rows), progress
    hf_table.py     convert_hf_table + hf_image: the generic converter of HF parquet / JSONL exports
    cli.py          add_common_arguments, write_outputs, run_cli, module_main

Conventions (all converters):
- `convert(...) -> (records, report)`; every row read ends up converted, rejected (reason + id) or skipped by an explicit
  filter the user asked for (`--lang`, `--split` on files that carry several splits):
  `read == converted + sum(len(ids) for ids in rejected.values()) + sum(skipped.values())`.
- Structural problems of the input (missing file, malformed JSON file, missing column) raise `DataError` naming the file
  and row; problems of one row (missing image, empty answer, unknown field value) reject that row. A .jsonl line that is
  not valid UTF-8 or not JSON is such a row: rejected as `<file>:line N` (invalid_utf8 / malformed_json).
- Image paths are written absolute, so the output JSON works from any working directory. A name that resolves outside
  --image_root (`../../x.jpg`, an absolute path elsewhere) is rejected as `image_outside_root` unless
  --allow_outside_root is given.
- A repeated id with the same content is rejected as `duplicate_row`; a repeated id with different content gets the
  deterministic suffix `-dup2`, `-dup3`, ... (order of appearance) and is counted in `notes.ids_disambiguated`.
"""
