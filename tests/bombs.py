"""Hostile files for the tests, made in a fraction of a second: real compressed bombs (a
small .gz or .npz that expands to a gigabyte of zeros) and a way to measure the peak
memory of a command that reads one."""
import gzip
import struct
import subprocess
import sys
import zlib

GiB = 1 << 30
_CHUNK = 16 << 20   # compressed once, repeated: 16 MiB of zeros deflate to 16 KB


def gzip_bomb(path, expanded=GiB, head=b""):
    """A gzip file of about 1 MB that expands to ``head`` and then ``expanded`` zero bytes.
    A gzip file may hold several members, read one after another: one member of 16 MiB of
    zeros is compressed once and written ``expanded / 16 MiB`` times."""
    member = gzip.compress(bytes(_CHUNK), 9)
    with open(path, "wb") as f:
        f.write(gzip.compress(head))
        for _ in range(expanded // _CHUNK):
            f.write(member)
    return path


def npz_bomb(path, expanded=GiB, declare=None, entry="x"):
    """An .npz file of about 1 MB whose one entry (``entry``) is a float64 .npy of ``expanded``
    bytes of zeros, deflated. ``declare`` replaces the uncompressed size written in the zip's
    directory (a lie). The deflate stream is made with full flushes, after which the same
    16 MiB of zeros always compress to the same bytes, so one block is written many times."""
    header = _npy_header((expanded // 8,), "<f8")
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = c.compress(header) + c.flush(zlib.Z_FULL_FLUSH)
    block = c.compress(bytes(_CHUNK)) + c.flush(zlib.Z_FULL_FLUSH)
    tail = c.flush()
    count = expanded // _CHUNK
    crc = zlib.crc32(header)
    zeros = bytes(_CHUNK)
    for _ in range(count):
        crc = zlib.crc32(zeros, crc)
    size = len(header) + count * _CHUNK if declare is None else declare
    compressed = len(head) + count * len(block) + len(tail)
    name = f"{entry}.npy".encode()
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0, crc, compressed, size, len(name), 0)
    central = struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0, crc, compressed, size,
                          len(name), 0, 0, 0, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(local + name + head)
        for _ in range(count):
            f.write(block)
        f.write(tail)
        directory = f.tell()
        f.write(central + name)
        f.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(central) + len(name), directory, 0))
    return path


def _npy_header(shape, descr):
    """The bytes of a version-1.0 .npy header."""
    text = repr({"descr": descr, "fortran_order": False, "shape": shape}).encode("latin1")
    text += b" " * (63 - (10 + len(text)) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text


def peak_memory_of(args, **kw):
    """(CompletedProcess, peak resident memory in bytes) of running ``args`` in a child
    process: a small Python parent runs it and reports its child's ru_maxrss."""
    script = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], capture_output=True, "
              "text=True); sys.stdout.write(r.stdout); sys.stderr.write(r.stderr); "
              "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)")
    result = subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True,
                            text=True, timeout=300, **kw)
    peak_kb = int(result.stdout.strip().splitlines()[-1])
    return result, peak_kb * 1024


def idx_header(dims, code=0x08):
    """The header of an IDX file of type ``code`` with the dimensions ``dims``."""
    return bytes([0, 0, code, len(dims)]) + b"".join(int(d).to_bytes(4, "big") for d in dims)

