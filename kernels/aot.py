"""Ahead-of-time builds of netdsl kernels for NVIDIA GPUs, on a machine without one.

``triton.compile(ASTSource(fn, signature, constexprs), target=GPUTarget("cuda", cc, 32))``
runs the whole Triton pipeline (TTIR -> TTGIR -> LLVM IR -> PTX -> cubin via the ptxas
that ships in the triton wheel) with no driver involved. From the cubin we read what
matters for performance with the wheel's ``cuobjdump``:

* ``--dump-resource-usage``: registers per thread, stack frame, local and static shared memory;
* ``-sass``: spill traffic (``STL``/``LDL``: Triton kernels use no local arrays, so every local
  store/load is a spill) and tensor-core use (``HMMA`` on sm_80, ``HGMMA`` = wgmma on sm_90).

Why worker processes: Triton decides "interpret or compile" when a function is decorated,
and its own library helpers are decorated when ``triton`` is first imported. A process
running with TRITON_INTERPRET=1 (the test suite, a CPU-only compiler run) therefore cannot
AOT-compile. :func:`build_many` runs every build in a fresh "spawn" worker whose
environment has TRITON_INTERPRET=0 before triton is imported, and names kernels by
(module, function) strings. :func:`build` is the in-process primitive the workers call.

Reports are cached on disk (``NETDSL_CACHE_DIR`` or ``~/.cache/netdsl/aot``), keyed by the
source text of the kernel's module and of the kernel modules it imports, the signature,
constexprs, warps, stages, target and triton version; cached jobs never start a worker. Next to
each report the cache keeps the build's cubin and PTX (:func:`artifact`), for a caller that ships
them (`netdsl compile -o DIR`); ``build_many(..., artifacts=True)`` rebuilds a cached report whose
files are missing.

The jobs come from each kernel module's ``specialization(...)`` (a dict with module,
kernel, signature, constexprs, num_warps, num_stages), computed by the same code that
plans a real launch:

    spec = conv.specialization((1, 56, 56, 64), torch.float16, ...)
    reports = build_many(jobs(spec, ccs=(80, 90)))
"""

import concurrent.futures as cf
import contextlib
import hashlib
import importlib
import json
import multiprocessing
import os
import re
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

# Per-block shared memory limits (opt-in maximum) by compute capability, in bytes.
SHARED_LIMIT = {80: 166912, 86: 101376, 87: 166912, 89: 101376, 90: 232448}
MAX_REGISTERS = 255


@dataclass
class KernelReport:
    name: str                   # kernel function name
    module: str                 # module that defines it
    cc: int                     # compute capability (80 = sm_80, 90 = sm_90a)
    num_warps: int
    num_stages: int
    registers: int              # registers per thread
    spills: int                 # spill instructions in SASS (spill_stores + spill_loads)
    spill_stores: int           # STL instructions
    spill_loads: int            # LDL instructions
    stack_bytes: int            # stack frame per thread
    local_bytes: int            # local memory per thread
    shared_bytes: int           # shared memory per block (Triton's dynamic + static)
    fits_shared: bool           # shared_bytes within the per-block limit of this cc
    uses_mma: bool              # tensor-core instructions present
    mma: str                    # which: "HMMA", "HGMMA" (sm_90 wgmma), "" if none
    ptx_lines: int
    sass_lines: int
    constexprs: dict = field(default_factory=dict)
    compile_s: float = 0.0      # wall time of the build (0 for a cache hit)
    cached: bool = False
    key: str = ""               # the cache key (names the cached cubin and PTX: see artifact)
    tma: bool = False           # loads through TMA tensor descriptors (UTMALDG, sm_90)


def _cuda_tool(name: str) -> str:
    import triton
    path = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name
    if not path.exists():
        raise FileNotFoundError(f"{name} not found in the triton wheel at {path}")
    return str(path)


def _parse_resource_usage(text: str) -> dict:
    def num(key):
        m = re.search(rf"\b{key}:(\d+)", text)
        return int(m.group(1)) if m else 0
    return {"registers": num("REG"), "stack_bytes": num("STACK"), "local_bytes": num("LOCAL"),
            "static_shared": num("SHARED")}


def _analyse_sass(sass: str) -> dict:
    instructions = re.findall(r"/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)", sass)
    ops = [i.split(".")[0] for i in instructions]
    mma = ""
    for kind in ("HGMMA", "HMMA"):
        if kind in ops:
            mma = kind
            break
    return {"spill_stores": ops.count("STL"), "spill_loads": ops.count("LDL"), "mma": mma,
            "tma": "UTMALDG" in ops, "sass_lines": len(instructions)}


def build(fn, signature: dict, constexprs: dict, cc: int, num_warps: int = 4, num_stages: int = 3,
          divisible_by_16=()) -> KernelReport:
    """Compile one kernel for ``sm_<cc>`` in this process and report its resource use (see
    :func:`build_with_code`, which also returns the cubin and the PTX)."""
    return build_with_code(fn, signature, constexprs, cc, num_warps, num_stages, divisible_by_16)[0]


def build_with_code(fn, signature: dict, constexprs: dict, cc: int, num_warps: int = 4, num_stages: int = 3,
                    divisible_by_16=()) -> tuple:
    """(report, cubin bytes, PTX text) of one kernel compiled for ``sm_<cc>`` in this process.

    ``divisible_by_16`` names the arguments that get Triton's divisibility hint (pointers
    16-byte aligned, integers multiples of 16), as the JIT does for such values.

    ``fn`` must be a compiled-mode ``@triton.jit`` function: this process must not run
    with TRITON_INTERPRET=1 (use :func:`build_many` from such processes).
    """
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.runtime.jit import JITFunction

    if not isinstance(fn, JITFunction):
        raise RuntimeError(f"{getattr(fn, '__name__', fn)!r} is not a compiled-mode @triton.jit function "
                           "(TRITON_INTERPRET=1 in this process?); use aot.build_many")
    start = time.time()
    attrs = {(fn.arg_names.index(name),): [["tt.divisibility", 16]] for name in divisible_by_16}
    src = ASTSource(fn=fn, signature=dict(signature), constexprs=dict(constexprs), attrs=attrs)
    options = {"num_warps": num_warps, "num_stages": num_stages, "enable_fp_fusion": True}
    compiled = triton.compile(src, target=GPUTarget("cuda", cc, 32), options=options)
    with tempfile.TemporaryDirectory() as tmp:
        cubin = Path(tmp) / "kernel.cubin"
        cubin.write_bytes(compiled.asm["cubin"])
        cuobjdump = _cuda_tool("cuobjdump")
        usage = subprocess.run([cuobjdump, "--dump-resource-usage", str(cubin)], check=True,
                               capture_output=True, text=True).stdout
        sass = subprocess.run([cuobjdump, "-sass", str(cubin)], check=True, capture_output=True, text=True).stdout
    res = _parse_resource_usage(usage)
    code = _analyse_sass(sass)
    shared = int(compiled.metadata.shared) + res["static_shared"]
    report = KernelReport(
        name=fn.__name__, module=fn.fn.__module__, cc=cc, num_warps=num_warps, num_stages=num_stages,
        registers=res["registers"], spills=code["spill_stores"] + code["spill_loads"],
        spill_stores=code["spill_stores"], spill_loads=code["spill_loads"],
        stack_bytes=res["stack_bytes"], local_bytes=res["local_bytes"],
        shared_bytes=shared, fits_shared=shared <= SHARED_LIMIT.get(cc, SHARED_LIMIT[80]),
        uses_mma=bool(code["mma"]), mma=code["mma"], ptx_lines=len(compiled.asm["ptx"].splitlines()),
        sass_lines=code["sass_lines"], constexprs=dict(constexprs), compile_s=round(time.time() - start, 3),
        tma=code["tma"],
    )
    return report, bytes(compiled.asm["cubin"]), str(compiled.asm["ptx"])


# ----------------------------------------------------------------------------- jobs

def jobs(specs, ccs=(80, 90)) -> list:
    """Jobs for build_many: every spec (a dict or a list of dicts) for every compute capability."""
    if isinstance(specs, dict):
        specs = [specs]
    return [{**spec, "cc": cc} for spec in specs for cc in ccs]


def cache_dir() -> Path:
    return Path(os.environ.get("NETDSL_CACHE_DIR") or Path.home() / ".cache" / "netdsl" / "aot")


ARTIFACTS = ("cubin", "ptx")


def artifact(report: KernelReport, kind: str) -> Path:
    """Where the cache keeps the ``kind`` ("cubin" or "ptx") of a report's build."""
    if kind not in ARTIFACTS or not report.key:
        raise ValueError(f"no {kind} for a report without a cache key ({report.name})")
    return cache_dir() / f"{report.key}.{kind}"


def _write_atomically(path: Path, data: bytes) -> None:
    """Write a temporary file next to ``path`` and rename it into place: readers see all or nothing."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def _source_files(module_name: str) -> list:
    """The module's file and, recursively, the sibling modules it imports relatively."""
    module = importlib.import_module(module_name)
    folder = Path(module.__file__).parent
    seen, todo = [], [Path(module.__file__)]
    while todo:
        path = todo.pop()
        if path in seen or not path.exists():
            continue
        seen.append(path)
        for name in re.findall(r"^\s*from \.(\w+) import", path.read_text(), flags=re.M):
            todo.append(folder / f"{name}.py")
    return sorted(seen)


def job_key(job: dict) -> str:
    import triton
    h = hashlib.sha256()
    for path in _source_files(job["module"]):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    meta = {k: job.get(k) for k in ("module", "kernel", "signature", "constexprs", "divisible_by_16", "num_warps",
                                    "num_stages", "cc")}
    h.update(json.dumps(meta, sort_keys=True, default=str).encode())
    h.update(triton.__version__.encode())
    return h.hexdigest()[:32]


def _build_job(job: dict, folder: Optional[str] = None, key: str = "") -> dict:
    """Worker entry point: import the kernel by name and build it (compiled mode); with ``folder``,
    keep the cubin and PTX there as ``<key>.cubin`` and ``<key>.ptx``."""
    fn = getattr(importlib.import_module(job["module"]), job["kernel"])
    report, cubin, ptx = build_with_code(fn, job["signature"], job["constexprs"], job["cc"], job["num_warps"],
                                         job["num_stages"], job.get("divisible_by_16", ()))
    if folder is not None:
        Path(folder).mkdir(parents=True, exist_ok=True)
        _write_atomically(Path(folder) / f"{key}.cubin", cubin)
        _write_atomically(Path(folder) / f"{key}.ptx", ptx.encode())
    return {**asdict(report), "key": key}


def _init_worker() -> None:
    # Before anything imports triton in this fresh process: compile, do not interpret.
    os.environ["TRITON_INTERPRET"] = "0"
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")


@contextlib.contextmanager
def _compile_mode_environment():
    """Spawned workers inherit os.environ at start: make it compile-mode while they start.

    (The initializer sets it too, but a spawned child re-imports the parent's __main__
    script, which may import triton, before the initializer runs.)
    """
    saved = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "0"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("TRITON_INTERPRET", None)
        else:
            os.environ["TRITON_INTERPRET"] = saved


def build_many(job_list, max_workers: int = 2, use_cache: bool = True,
               on_done: Optional[Callable[[int, KernelReport], None]] = None, artifacts: bool = False) -> list:
    """Build every job (dicts from :func:`jobs`) in spawn workers; reports in job order.

    ``on_done(number of reports ready, the latest)`` follows the builds (cache hits first).
    ``artifacts``: every report's cubin and PTX must be in the cache (see :func:`artifact`).
    """
    if artifacts and not use_cache:
        raise ValueError("artifacts are kept in the cache: artifacts=True needs use_cache=True")
    job_list = list(job_list)
    reports = [None] * len(job_list)
    keys = [job_key(job) for job in job_list]
    folder = cache_dir()
    missing, ready = [], 0
    for i, key in enumerate(keys):
        path = folder / f"{key}.json"
        complete = not artifacts or all((folder / f"{key}.{kind}").exists() for kind in ARTIFACTS)
        if use_cache and complete and path.exists():
            try:
                reports[i] = KernelReport(**{**json.loads(path.read_text()), "cached": True, "compile_s": 0.0,
                                             "key": key})
                ready += 1
                if on_done is not None:
                    on_done(ready, reports[i])
                continue
            except (ValueError, TypeError):
                pass  # a stale or corrupt entry: rebuild it
        missing.append(i)
    if missing:
        ctx = multiprocessing.get_context("spawn")
        with _compile_mode_environment():
            pool = cf.ProcessPoolExecutor(max_workers=max(1, min(max_workers, len(missing))), mp_context=ctx,
                                          initializer=_init_worker)
            keep = str(folder) if use_cache else None
            futures = {pool.submit(_build_job, job_list[i], keep, keys[i]): i for i in missing}
        with pool:
            for future in cf.as_completed(futures):
                i = futures[future]
                job = job_list[i]
                try:
                    data = future.result()
                except OSError:  # the cache folder cannot be written: the caller reports the path
                    raise
                except Exception as e:
                    raise RuntimeError(f"AOT build of {job['module']}.{job['kernel']} for sm_{job['cc']} "
                                       f"({job['constexprs']}) failed: {e}") from e
                reports[i] = KernelReport(**data)
                if use_cache:
                    folder.mkdir(parents=True, exist_ok=True)
                    _write_atomically(folder / f"{keys[i]}.json", json.dumps(data, default=str).encode())
                ready += 1
                if on_done is not None:
                    on_done(ready, reports[i])
    return reports


def format_reports(reports, nodes=None) -> str:
    """A small table: kernel, cc, warps/stages, registers, spills, shared, MMA; with ``nodes`` (one
    sequence of names per report), the nodes each kernel serves (the first three, and how many more)."""
    served = [", ".join(n[:3]) + (f" +{len(n) - 3} more" if len(n) > 3 else "") for n in nodes] \
        if nodes is not None else None
    width = max([len(n) for n in served or ()] + [5])
    head = f"{'nodes':{width}}  " if served is not None else ""
    lines = [f"{'kernel':28} {'cc':>3} {'w/s':>5} {'regs':>4} {'spill':>5} {'smem':>7} {'mma':>6}  {head}constexprs"]
    for i, r in enumerate(reports):
        tiles = {k: v for k, v in r.constexprs.items() if k.startswith("BLOCK") or k in ("DTYPE",)}
        cell = f"{served[i]:{width}}  " if served is not None else ""
        lines.append(f"{r.name:28} {r.cc:>3} {r.num_warps:>2}/{r.num_stages:<2} {r.registers:>4} {r.spills:>5} "
                     f"{r.shared_bytes:>7} {r.mma or '-':>6}  {cell}{tiles}")
    return "\n".join(lines)
