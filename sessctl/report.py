"""Output of the maintenance commands (`key`, `doctor`). Pure; writes to a given stream."""

from __future__ import annotations

from typing import Any, TextIO

from sessctl.render import _table, write_json
from sessctl.timeutil import iso


def _kdf_text(kdf: dict[str, Any] | None) -> str | None:
    if not kdf:
        return None
    return (f"{kdf.get('alg')} ({int(kdf.get('memory_cost', 0)) // 1024} MiB, "
            f"{kdf.get('iterations')} passes, {kdf.get('lanes')} lanes)")


def key_status_dict(st: Any) -> dict[str, Any]:
    info = st.info
    return {
        "database": str(st.database),
        "kind": info.kind if info else None,
        "key_file": str(st.key_file) if st.key_file else None,
        "fingerprint": info.fingerprint if info else None,
        "db_id": info.db_id if info else None,
        "data_key_created_at": iso(info.data_key_created_at) if info else None,
        "wrapped_at": iso(info.wrapped_at) if info else None,
        "kdf": info.kdf if info else None,
        "unlocks": st.unlocks,
    }


def write_key_status(out: TextIO, st: Any, fmt: str) -> None:
    d = key_status_dict(st)
    if fmt == "json":
        write_json(out, d)
        return
    if st.info is None:
        rows = [["database", d["database"]], ["kind", "none yet (the first write creates the key)"]]
    else:
        rows = [
            ["database", d["database"]],
            ["kind", d["kind"]],
            ["key file", d["key_file"]] if d["kind"] == "file" else ["key from", "SESSCTL_PASSPHRASE"],
            ["fingerprint", d["fingerprint"]],
            ["database id", d["db_id"]],
            ["data key created", d["data_key_created_at"]],
            ["key last wrapped", d["wrapped_at"]],
        ]
        if d["kdf"]:
            rows.append(["key derivation", _kdf_text(d["kdf"])])
        rows.append(["unlocks", "yes" if st.unlocks else "NO"])
    out.write(_table(rows, ["FIELD", "VALUE"]) + "\n")


def rotate_dict(r: Any) -> dict[str, Any]:
    return {
        "kind": r.info.kind,
        "key_file": str(r.key_file) if r.key_file else None,
        "passphrase_env": r.passphrase_env,
        "fingerprint": r.info.fingerprint,
        "data_key_created_at": iso(r.info.data_key_created_at),
        "wrapped_at": iso(r.info.wrapped_at),
        "reencrypted": r.reencrypted,
    }


def write_rotate(out: TextIO, r: Any, fmt: str) -> None:
    d = rotate_dict(r)
    if fmt == "json":
        write_json(out, d)
        return
    rows = [["kind", d["kind"]]]
    rows.append(["key file", d["key_file"]] if d["key_file"] else ["passphrase from", d["passphrase_env"]])
    rows += [["fingerprint", d["fingerprint"]], ["data key created", d["data_key_created_at"]],
             ["key last wrapped", d["wrapped_at"]]]
    if d["reencrypted"] is not None:
        rows.append(["values re-encrypted", str(d["reencrypted"])])
    out.write(_table(rows, ["FIELD", "VALUE"]) + "\n")


def doctor_dict(report: Any) -> dict[str, Any]:
    return {
        "database": str(report.database),
        "ok": report.exit_code == 0,
        "exit_code": report.exit_code,
        "quick": report.quick,
        "checks": [
            {"name": c.name, "status": c.status, "detail": c.detail, **({"problems": c.problems} if c.problems else {})}
            for c in report.checks
        ],
    }


def write_doctor(out: TextIO, report: Any, fmt: str) -> None:
    if fmt == "json":
        write_json(out, doctor_dict(report))
        return
    rows = []
    for c in report.checks:
        rows.append([c.name, c.status.upper() if c.status == "fail" else c.status, c.detail])
        rows += [["", "", f"  {p}"] for p in c.problems[:10]]
        if len(c.problems) > 10:
            rows.append(["", "", f"  ... and {len(c.problems) - 10} more (see --format json)"])
    out.write(_table(rows, ["CHECK", "STATUS", "DETAIL"]) + "\n")
