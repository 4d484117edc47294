"""The one content-hash routine, against hashlib by hand (the values are stored with runs: they must not drift)."""
from __future__ import annotations

import hashlib
import os

from harness.api.hashing import digest_files, file_sha256

MIB = 1 << 20


def test_file_sha256_is_sha256sum(tmp_path):
    data = os.urandom(3 * MIB + 17)
    (tmp_path / "f").write_bytes(data)
    assert file_sha256(tmp_path / "f") == hashlib.sha256(data).hexdigest()


def test_digest_files_whole_and_sampled(tmp_path):
    small, big = os.urandom(1000), os.urandom(5 * MIB + 3)
    (tmp_path / "a.json").write_bytes(small)
    (tmp_path / "b.safetensors").write_bytes(big)
    files = [tmp_path / "a.json", tmp_path / "b.safetensors"]
    whole = hashlib.sha256(b"a.json:1000" + small + f"b.safetensors:{len(big)}".encode() + big)
    assert digest_files(files, sampled=False).hexdigest() == whole.hexdigest()
    # sampled: name:size, the first MiB, and (over 2 MiB) the last MiB
    sampled = hashlib.sha256(b"a.json:1000" + small + f"b.safetensors:{len(big)}".encode() + big[:MIB] + big[-MIB:])
    assert digest_files(files, sampled=True).hexdigest() == sampled.hexdigest()
    # a change in the middle of a big file is invisible to the sampled hash, by design, but not to the whole one
    changed = big[:2 * MIB] + bytes([big[2 * MIB] ^ 1]) + big[2 * MIB + 1:]
    (tmp_path / "b.safetensors").write_bytes(changed)
    assert digest_files(files, sampled=True).hexdigest() == sampled.hexdigest()
    assert digest_files(files, sampled=False).hexdigest() != whole.hexdigest()
