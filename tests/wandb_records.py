"""Read back what an offline W&B run logged, from its `run-<id>.wandb` file.

wandb 0.31 ships no reader (the old `wandb.sdk.internal.datastore` is gone), so this
parses the LevelDB-style log that wandb-core writes:

    file header: ":W&B" (4 bytes), magic 0xBEE1 (uint16 LE), version 0 (uint8)
    then 32 KiB blocks of chunks: crc32 (uint32 LE; zlib crc32 of the type byte, then the
    data), length (uint16 LE), type (1 full, 2 first, 3 middle, 4 last), data;
    a block tail shorter than a chunk header is zero padding.

Each whole record is a `wandb.proto.wandb_internal_pb2.Record`. wandb-core flushes the file
every 15 s and when the run's stream closes, which can be after `run.finish()` returns: call
`wandb.teardown()` before reading a run this process has just finished.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

BLOCK = 32768
HEADER = struct.Struct("<IHB")  # crc32, length, chunk type
FILE_HEADER = struct.Struct("<4sHB")  # ident, magic, version
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def iter_records(path: Path):
    """Yield the protobuf Records of a .wandb file; raise ValueError on a bad header or checksum."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    ident, magic, version = FILE_HEADER.unpack_from(data, 0)
    if ident != b":W&B" or magic != 0xBEE1 or version != 0:
        raise ValueError(f"{path}: not a W&B log (header {ident!r} {magic:#x} v{version})")
    pos, parts = FILE_HEADER.size, []
    while pos + HEADER.size <= len(data):
        if BLOCK - pos % BLOCK < HEADER.size:  # padding at the end of a block
            pos += BLOCK - pos % BLOCK
            continue
        crc, length, kind = HEADER.unpack_from(data, pos)
        if kind == 0 and length == 0:  # zero fill (a file still being written)
            break
        chunk = data[pos + HEADER.size: pos + HEADER.size + length]
        if zlib.crc32(chunk, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF != crc:
            raise ValueError(f"{path}: checksum mismatch at byte {pos}")
        pos += HEADER.size + length
        parts.append(chunk)
        if kind in (FULL, LAST):
            rec = pb.Record()
            rec.ParseFromString(b"".join(parts))
            parts = []
            yield rec


def _value(json_text: str):
    try:
        return json.loads(json_text)
    except ValueError:
        return json_text


def _put(target: dict, item, value) -> None:
    """Store an update under its key; a nested key (["per_role", "path"]) becomes nested dicts."""
    keys = list(item.nested_key) or [item.key]
    for k in keys[:-1]:
        target = target.setdefault(k, {})
    target[keys[-1]] = value


def _drop(target: dict, item) -> None:
    keys = list(item.nested_key) or [item.key]
    for k in keys[:-1]:
        target = target.get(k, {})
    target.pop(keys[-1], None)


def read_wandb_offline(run_dir: Path) -> dict:
    """What an offline run logged: {config, summary, history, artifacts, tables, files, run, exit_code}.

    run_dir is the `offline-run-*` (or `run-*`) directory. `config` and `summary` are the final
    values (later updates win; a key logged as "a/b" stays one key, a nested update becomes nested
    dicts); `history` is a list of dicts, one per `log` step; `artifacts` a list of {name, type,
    files}; `tables` maps a logged table's key to its JSON ({columns, data}) from files/media/table.
    """
    run_dir = Path(run_dir)
    logs = sorted(run_dir.glob("run-*.wandb"))
    if not logs:
        raise FileNotFoundError(f"no run-*.wandb in {run_dir}")
    out = {"config": {}, "summary": {}, "history": [], "artifacts": [], "tables": {}, "files": [], "run": {},
           "exit_code": None}
    for rec in iter_records(logs[0]):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            r = rec.run
            out["run"] = {"id": r.run_id, "project": r.project, "entity": r.entity, "group": r.run_group,
                          "job_type": r.job_type, "name": r.display_name, "tags": list(r.tags)}
            for item in r.config.update:
                out["config"][item.key] = _value(item.value_json)
        elif kind == "config":
            for item in rec.config.update:
                out["config"][item.key] = _value(item.value_json)
            for item in rec.config.remove:
                out["config"].pop(item.key, None)
        elif kind == "summary":
            for item in rec.summary.update:
                _put(out["summary"], item, _value(item.value_json))
            for item in rec.summary.remove:
                _drop(out["summary"], item)
        elif kind == "history":
            step: dict = {}
            for item in rec.history.item:
                _put(step, item, _value(item.value_json))
            out["history"].append(step)
        elif kind == "artifact":
            a = rec.artifact
            out["artifacts"].append({"name": a.name, "type": a.type,
                                     "files": [m.path for m in a.manifest.contents]})
        elif kind == "files":
            out["files"].extend(f.path for f in rec.files.files)
        elif kind == "exit":
            out["exit_code"] = rec.exit.exit_code
    for row in out["history"] + [out["summary"]]:
        for key, value in row.items():
            if isinstance(value, dict) and value.get("_type") == "table-file" and "path" in value:
                path = run_dir / "files" / value["path"]
                if path.exists():
                    out["tables"][key] = json.loads(path.read_text())
    return out
