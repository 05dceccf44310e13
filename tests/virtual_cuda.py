"""Virtual CUDA: find CPU/CUDA device-mixing bugs on a CPU-only machine by running the real code.

While ``virtual_cuda()`` is active, everything really runs on the CPU, but tensors that would live
on the GPU are *tagged* and behave as CUDA tensors:

* ``x.to("cuda")``, ``x.cuda()``, ``torch.zeros(..., device="cuda")`` (any call with a cuda
  ``device=``), ``Module.to("cuda")``, ``accelerate.Accelerator().prepare(model)`` return tagged
  tensors; ``x.to("cpu")`` / ``x.cpu()`` of a tagged tensor returns an untagged copy (autograd
  flows through both moves, double-backward included).
* a tagged tensor reports ``x.device == cuda:0``, ``x.is_cuda``, ``x.get_device() == 0``;
  ``accelerate.Accelerator(...).device`` reports ``cuda`` (it is built with ``cpu=True``);
  ``torch.Generator(device="cuda")`` gives a CPU generator that reports (and is checked as) cuda.
* every aten op (forward, backward, optimizer, foreach) is checked with CUDA's rules: tensors of an
  op must share a device, except a 0-dim CPU tensor as an *input* of a pointwise op (TensorIterator
  "CPU scalar"), CPU index tensors of a CUDA tensor (``x[idx]``, ``x[idx] = v``), and ``copy_``
  (``cpu_t[...] = cuda_t`` / ``cpu_t.copy_(cuda_t)`` is a legal cross-device copy); a generator must
  be on the op's device; ``.numpy()`` / ``np.asarray`` of a tagged tensor fails.

* also: ``x.type_as(y)`` / ``x.type("torch.cuda.FloatTensor")`` / ``x.new_*()`` / deepcopy keep
  CUDA semantics; safetensors ``load_file(device="cuda")`` and ``torch.load(map_location="cuda")``
  load tagged; ``torch.cuda.is_available()`` is True for callers in hjtranslate(_plugins) only;
  optimizers / clip_grad_norm_ group tensors by their virtual device.
* ``VCUDA_FAKE_PROCESSES=2`` makes the Accelerator report 2 processes (still one; reduce and gather
  stay no-ops) so multi-process branches run, and flags CPU tensors handed to reduce/gather (NCCL).
* ``VCUDA_PROJECT=dir1:dir2`` sets which frames a report names (default this checkout's
  hjtranslate/ and plugins/).

Tags live on *storages* (keyed by StorageImpl, held by weak reference), so views, ``detach()``,
``.data``, ``nn.Parameter(...)`` and ``param.data = ...`` keep their device like real CUDA memory.

Usage::

    import virtual_cuda
    with virtual_cuda.virtual_cuda():                # raise at the first mix (traceback -> offending line)
        ...
    with virtual_cuda.virtual_cuda(mode="record") as vc:   # go on; collect every distinct mix
        ...
    print(vc.report())

or ``python tests/virtual_cuda.py [--record] -m hjtranslate train toy2d --steps 5 ...`` /
``python tests/virtual_cuda.py [--record] script.py args...``.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import traceback
import types
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.utils._pytree as pytree
from torch.multiprocessing.reductions import StorageWeakRef
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

CUDA = torch.device("cuda", 0)  # what a tensor on the (only) GPU reports
CPU = torch.device("cpu")
_RealGenerator = torch.Generator
_TB = torch._C.TensorBase

#: frames whose file starts with one of these count as "project" frames in reports
_REPO = Path(__file__).resolve().parents[1]
PROJECT_ROOTS = os.environ.get(
    "VCUDA_PROJECT", f"{_REPO / 'hjtranslate'}{os.pathsep}{_REPO / 'plugins'}").split(os.pathsep)


class DeviceMixError(RuntimeError):
    pass


# ----------------------------------------------------------------------------- storage tags
_cuda: dict[int, StorageWeakRef] = {}   # storages "on the GPU"
_wild: dict[int, StorageWeakRef] = {}   # made inside torch internals (C++ autograd, ...): unknown
_ops_since_purge = 0


def _key(t: torch.Tensor):
    try:
        if t.device.type != "cpu" or t.is_sparse:
            return None
        return t.untyped_storage()._cdata
    except Exception:  # no storage (sparse, nested, wrapper subclasses)
        return None


def _lookup(table: dict, k) -> bool:
    ref = table.get(k)
    if ref is None:
        return False
    if ref.expired():
        del table[k]
        return False
    return True


def state(t: torch.Tensor) -> str:
    """'cuda' (tagged), 'wild', 'cpu', or 'other' (meta, ... : not checked)."""
    with torch._C.DisableTorchFunction():
        k = _key(t)
        if k is None:
            return "other"
        if _lookup(_cuda, k):
            return "cuda"
        if _lookup(_wild, k):
            return "wild"
        return "cpu"


def _purge() -> None:
    for table in (_cuda, _wild):
        for k in [k for k, r in table.items() if r.expired()]:
            del table[k]


def set_state(t: torch.Tensor, st: str) -> None:
    global _ops_since_purge
    with torch._C.DisableTorchFunction():
        k = _key(t)
        if k is None:
            return
        _cuda.pop(k, None)
        _wild.pop(k, None)
        if st in ("cuda", "wild"):
            (_cuda if st == "cuda" else _wild)[k] = StorageWeakRef(t.untyped_storage())
            _ops_since_purge += 1
            if _ops_since_purge > 20000:
                _ops_since_purge = 0
                _purge()


def is_tagged(t: torch.Tensor) -> bool:
    return state(t) == "cuda"


def vdevice(t: torch.Tensor) -> torch.device:
    with torch._C.DisableTorchFunction():
        return CUDA if state(t) == "cuda" else t.device


# ----------------------------------------------------------------------------- generators
class _GenMeta(type(_RealGenerator)):
    def __instancecheck__(cls, obj):
        return isinstance(obj, _RealGenerator)

    def __subclasscheck__(cls, sub):
        return issubclass(sub, _RealGenerator)


class VCudaGenerator(_RealGenerator):
    """A CPU generator that stands for a CUDA one."""

    @property
    def device(self):
        return CUDA


class PatchedGenerator(_RealGenerator, metaclass=_GenMeta):
    """Replaces ``torch.Generator`` while active: ``device="cuda"`` gives a VCudaGenerator."""

    def __new__(cls, device="cpu"):
        d = _as_device(device)
        if d is not None and d.type == "cuda":
            return VCudaGenerator()
        return _RealGenerator(device)


def gen_device(g) -> torch.device:
    return CUDA if isinstance(g, VCudaGenerator) else g.device


# ----------------------------------------------------------------------------- helpers
def _as_device(d):
    if d is None:
        return None
    if isinstance(d, torch.device):
        return d
    if isinstance(d, int):
        return torch.device("cuda", d)
    return torch.device(d)


def _vdev_name(st: str) -> str:
    return {"cuda": "cuda:0", "cpu": "cpu"}.get(st, st)


def _describe(t) -> str:
    if isinstance(t, _RealGenerator):
        return f"Generator on {gen_device(t)}"
    with torch._C.DisableTorchFunction():
        return f"{tuple(t.shape)} {str(t.dtype).replace('torch.', '')} on {_vdev_name(state(t))}"


class _Ctx(threading.local):
    def __init__(self):
        self.stack: list[str] = []   # kinds of the torch-function handlers we are inside
        self.py_funcs: list[str] = []  # the Python torch functions among them (for wild_report)


_ctx = _Ctx()


class _VMove(torch.autograd.Function):
    """A differentiable copy that changes the virtual device (its backward moves the grad back)."""

    @staticmethod
    def forward(ctx, x, to_cuda):
        ctx.to_cuda = to_cuda
        y = x.clone()
        set_state(y, "cuda" if to_cuda else "cpu")
        return y

    @staticmethod
    def backward(ctx, g):
        return _VMove.apply(g, not ctx.to_cuda), None


def vmove(t: torch.Tensor, to_cuda: bool) -> torch.Tensor:
    return _VMove.apply(t, to_cuda)


def _project_frames(stack) -> list:
    roots = tuple(PROJECT_ROOTS)
    return [f for f in stack if f.filename.startswith(roots)]


# ----------------------------------------------------------------------------- the checker
class VirtualCuda:
    def __init__(self, mode: str = "raise", anomaly: bool = False, fake_cuda_available: bool = True,
                 fake_processes: int | None = None):
        assert mode in ("raise", "record")
        self.fake_processes = (int(os.environ.get("VCUDA_FAKE_PROCESSES", "1"))
                               if fake_processes is None else fake_processes)
        self.mode = mode
        self.anomaly = anomaly
        self.fake_cuda_available = fake_cuda_available
        self.wild_made: dict[tuple, int] = {}  # (Python torch function, aten factory) -> count
        self.cuda_ops = 0   # aten ops checked that had a tensor on the virtual GPU (coverage)
        self.hits: dict[tuple, dict] = {}   # (file, line, message-kind) -> first report, count
        self._stack = contextlib.ExitStack()

    # ---- reporting
    def problem(self, msg: str, exc=DeviceMixError) -> None:
        stack = traceback.extract_stack()[:-2]
        proj = _project_frames(stack)
        where = proj[-1] if proj else (stack[-1] if stack else None)
        fwd = None
        node = torch._C._current_autograd_node()
        if node is not None:  # inside backward: where the forward op was (anomaly mode only)
            msg += f" [in backward: {node.name()}]"
            tb = node.metadata.get("traceback_") if hasattr(node, "metadata") else None
            if tb:
                fwd = "".join(tb if isinstance(tb, list) else [str(tb)])
        loc = f"{where.filename}:{where.lineno}" if where else "?"
        full = f"virtual CUDA: {msg}\n  at {loc}: {where.line if where else ''}"
        key = (loc, msg.split(":")[0])
        if key in self.hits:
            self.hits[key]["count"] += 1
        else:
            self.hits[key] = {"where": loc, "code": where.line if where else "", "msg": msg,
                              "count": 1,
                              "project_stack": [f"{f.filename}:{f.lineno} {f.line}" for f in proj],
                              "forward": fwd}
        if self.mode == "raise":
            raise exc(full)

    def report(self) -> str:
        if not self.hits:
            return f"virtual CUDA: no device mix found ({self.cuda_ops} aten ops ran on the virtual GPU)."
        out = [f"virtual CUDA: {len(self.hits)} distinct device problem(s) "
               f"({self.cuda_ops} aten ops ran on the virtual GPU):"]
        for h in self.hits.values():
            out.append(f"- {h['where']} (x{h['count']}): {h['code']}\n    {h['msg']}")
            for s in h["project_stack"][:-1][-4:]:
                out.append(f"      via {s}")
            if h["forward"]:
                out.append("    forward:\n" + h["forward"])
        return "\n".join(out)

    # ---- activation
    def __enter__(self):
        s = self._stack
        vc_active.append(self)
        s.callback(vc_active.pop)
        s.enter_context(_patch(torch, "Generator", PatchedGenerator))
        self._patch_accelerate(s, self.fake_processes)
        self._patch_foreach_grouping(s)
        if self.fake_cuda_available:
            real = torch.cuda.is_available

            def is_available():  # True for the project's own checks only (not torch/accelerate's)
                mod = sys._getframe(1).f_globals.get("__name__", "")
                return True if mod.split(".")[0] in _fake_modules else real()
            s.enter_context(_patch(torch.cuda, "is_available", is_available))
            real_count = torch.cuda.device_count

            def device_count():  # one virtual GPU, for the project's own checks
                mod = sys._getframe(1).f_globals.get("__name__", "")
                return 1 if mod.split(".")[0] in _fake_modules else real_count()
            s.enter_context(_patch(torch.cuda, "device_count", device_count))
        self._patch_loaders(s)
        if self.anomaly:
            s.enter_context(torch.autograd.set_detect_anomaly(True, check_nan=False))
        s.enter_context(_VDispatch(self))
        s.enter_context(_VFunction(self))
        return self

    def __exit__(self, *exc):
        return self._stack.__exit__(*exc)

    @staticmethod
    def _patch_accelerate(s, fake_processes=1):
        try:
            import accelerate
            import accelerate.accelerator
        except ImportError:
            return
        Real = accelerate.accelerator.Accelerator

        class VAccelerator(Real):
            def __init__(self, *args, **kwargs):
                kwargs["cpu"] = True
                super().__init__(*args, **kwargs)

            @property
            def device(self):
                return torch.device("cuda")  # what accelerate reports on a one-GPU machine

            def _collective_check(self, what, tensor):
                # NCCL (multi-GPU) collectives take GPU tensors only (gloo would take CPU ones)
                if self.num_processes == 1:
                    return
                for t in pytree.tree_leaves(tensor):
                    if isinstance(t, torch.Tensor) and state(t) == "cpu":
                        vc_active[-1].problem(f"{what} of a CPU tensor {_describe(t)}: NCCL "
                                              "collectives need tensors on the GPU")

            def reduce(self, tensor, *args, **kwargs):
                self._collective_check("Accelerator.reduce", tensor)
                return super().reduce(tensor, *args, **kwargs)

            def gather(self, tensor):
                self._collective_check("Accelerator.gather", tensor)
                return super().gather(tensor)

            if fake_processes > 1:
                # still one process, but the code takes its multi-process branches (reduce,
                # gather and broadcast stay single-process no-ops); approximate
                @property
                def num_processes(self):
                    return fake_processes

        VAccelerator.__name__ = VAccelerator.__qualname__ = "Accelerator"
        s.enter_context(_patch(accelerate, "Accelerator", VAccelerator))
        s.enter_context(_patch(accelerate.accelerator, "Accelerator", VAccelerator))

    @staticmethod
    def _patch_loaders(s):
        """safetensors load_file(device="cuda") / torch.load(map_location=cuda): load on the
        CPU and tag what was loaded."""
        def on_cuda(d):
            try:
                d = _as_device(d if not isinstance(d, str) or d != "auto" else None)
            except (RuntimeError, TypeError):
                return False
            return d is not None and d.type == "cuda"

        def tag_all(obj):
            if isinstance(obj, torch.Tensor):
                set_state(obj, "cuda")
            elif isinstance(obj, dict):
                for v in obj.values():
                    tag_all(v)
            elif isinstance(obj, (list, tuple)):
                for v in obj:
                    tag_all(v)
            return obj
        try:
            import safetensors.torch as st
            real_load_file = st.load_file

            def load_file(filename, device="cpu"):
                if on_cuda(device):
                    return tag_all(real_load_file(filename, device="cpu"))
                return real_load_file(filename, device=device)
            s.enter_context(_patch(st, "load_file", load_file))
        except ImportError:
            pass
        real_torch_load = torch.load

        def torch_load(*args, **kwargs):
            ml = kwargs.get("map_location")
            if ml is not None and not callable(ml) and not isinstance(ml, dict) and on_cuda(ml):
                kwargs["map_location"] = "cpu"
                return tag_all(real_torch_load(*args, **kwargs))
            return real_torch_load(*args, **kwargs)
        s.enter_context(_patch(torch, "load", torch_load))

    @staticmethod
    def _patch_foreach_grouping(s):
        import torch.nn.utils.clip_grad as cg
        import torch.optim.optimizer as oo
        import torch.utils._foreach_utils as fu

        def group(tensorlistlist, with_indices=False):
            out: dict = {}
            for i, t in enumerate(tensorlistlist[0]):
                key = (vdevice(t), t.dtype)
                if key not in out:
                    out[key] = ([[] for _ in tensorlistlist], [])
                lists, idx = out[key]
                for j, tl in enumerate(tensorlistlist):
                    if len(tl):
                        lists[j].append(tl[i])
                if with_indices:
                    idx.append(i)
            return out
        for mod in (fu, oo, cg):
            if hasattr(mod, "_group_tensors_by_device_and_dtype"):
                s.enter_context(_patch(mod, "_group_tensors_by_device_and_dtype", group))


vc_active: list = []  # the active checkers (innermost last)
_fake_modules = {"hjtranslate", "hjtranslate_plugins"}


@contextlib.contextmanager
def _patch(obj, name, value):
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


def _getter(name):
    return _TB.__dict__[name]


_G_DEVICE, _G_IS_CUDA, _G_IS_CPU = _getter("device"), _getter("is_cuda"), _getter("is_cpu")
_NEW_METHODS = {_TB.new, _TB.new_tensor, _TB.new_empty, _TB.new_zeros, _TB.new_ones, _TB.new_full,
                _TB.new_empty_strided}
_RANDOM_FACTORIES = {torch.randn, torch.rand, torch.randint, torch.randperm, torch.normal,
                     torch.rand_like, torch.randn_like, torch.randint_like}


class _VFunction(TorchFunctionMode):
    """Python-level side: device spoofing, moves, factories, numpy."""

    def __init__(self, vc: VirtualCuda):
        super().__init__()
        self.vc = vc

    def __torch_function__(self, func, types_, args=(), kwargs=None):
        kwargs = kwargs or {}
        owner = getattr(func, "__self__", None)
        if owner is _G_DEVICE:
            return vdevice(args[0])
        if owner is _G_IS_CUDA:
            return state(args[0]) == "cuda" or func(*args)
        if owner is _G_IS_CPU:
            return False if state(args[0]) == "cuda" else func(*args)
        if func is _TB.get_device:
            return 0 if state(args[0]) == "cuda" else func(*args, **kwargs)
        if func is _TB.to:
            return self._to(args[0], args[1:], kwargs)
        if func is _TB.cuda:
            t = args[0]
            return t if state(t) == "cuda" else vmove(t, True)
        if func is _TB.cpu:
            t = args[0]
            return vmove(t, False) if state(t) == "cuda" else func(*args, **kwargs)
        if func in (_TB.numpy, torch.Tensor.__array__):
            if state(args[0]) == "cuda":
                self.vc.problem("can't convert cuda:0 device type tensor to numpy "
                                f"({func.__name__} of a {_describe(args[0])} tensor). Use "
                                "Tensor.cpu() to copy the tensor to host memory first.", TypeError)
            return func(*args, **kwargs)
        if func in (_TB.pin_memory,):
            return args[0]
        if func is torch.Tensor.__deepcopy__:  # copies the storage outside aten: keep its device
            out = func(*args, **kwargs)
            return self._retag(out, "cuda", args) if state(args[0]) == "cuda" else out
        if func is _TB.type_as:  # x.type_as(y) also moves x to y's device
            t, other = args[0], args[1]
            return self._to(t, (vdevice(other), other.dtype), {})
        if func is _TB.type:
            return self._type(func, args, kwargs)
        if func in _NEW_METHODS and kwargs.get("device") is None:  # x.new_*(...): x's device
            t = args[0]
            _ctx.stack.append("c")
            try:
                out = func(*args, **kwargs)
            finally:
                _ctx.stack.pop()
            if state(t) == "cuda":
                return self._retag(out, "cuda", args)
            return out
        dev = _as_device(kwargs.get("device"))
        if func is torch._C._nn._parse_to:  # Module.to(device=...) parses with it: keep cuda
            dev = None
        if dev is not None or func in _RANDOM_FACTORIES:
            return self._factory(func, args, kwargs, dev)
        kind = "py" if isinstance(func, types.FunctionType) else "c"
        if kind == "py":
            _ctx.py_funcs.append(getattr(func, "__qualname__", str(func)))
        _ctx.stack.append(kind)
        try:
            return func(*args, **kwargs)
        finally:
            _ctx.stack.pop()
            if kind == "py":
                _ctx.py_funcs.pop()

    # x.to(...)
    def _to(self, t, args, kwargs):
        kwargs = dict(kwargs)
        copy = kwargs.pop("copy", False)
        with torch._C.DisableTorchFunction():
            if args and isinstance(args[0], torch.Tensor):
                other = args[0]
                dev, dtype = vdevice(other), other.dtype
                nb = kwargs.get("non_blocking", args[1] if len(args) > 1 else False)
                mf = None
            else:
                dev, dtype, nb, mf = torch._C._nn._parse_to(*args, **kwargs)
        rest = {"dtype": dtype, "non_blocking": nb, "copy": copy}
        if mf is not None:
            rest["memory_format"] = mf
        if dtype is None:
            del rest["dtype"]
        st = state(t)
        if dev is None or dev.type not in ("cuda", "cpu") or st not in ("cuda", "cpu", "wild"):
            if dev is not None and dev.type not in ("cuda", "cpu"):
                rest["device"] = dev
            return t.to(**rest)
        want = "cuda" if dev.type == "cuda" else "cpu"
        if st == "wild":
            st = "cpu"
        if want != st:
            t = vmove(t, want == "cuda")
            rest["copy"] = False
        return t.to(**rest)

    def _type(self, func, args, kwargs):
        t = args[0]
        target = args[1] if len(args) > 1 else kwargs.get("dtype")
        rest = dict(kwargs)
        rest.pop("dtype", None)
        if target is None:  # x.type(): the type name, e.g. torch.cuda.FloatTensor
            name = func(t)
            return name.replace("torch.", "torch.cuda.", 1) if state(t) == "cuda" else name
        if isinstance(target, torch.dtype):
            return func(t, target, **rest)
        name = target if isinstance(target, str) else f"{target.__module__}.{target.__name__}"
        want_cuda = ".cuda." in name
        if want_cuda != (state(t) == "cuda"):
            t = vmove(t, want_cuda)
        return func(t, name.replace(".cuda.", ".", 1), **rest)

    def _retag(self, out, want_st, args):
        with torch._C.DisableTorchFunction():
            inputs = {_key(t) for t in pytree.arg_tree_leaves(*args) if isinstance(t, torch.Tensor)}

        def fix(t):
            if not isinstance(t, torch.Tensor):
                return t
            st = state(t)
            if st == want_st or st == "other":
                return t
            with torch._C.DisableTorchFunction():
                shared = _key(t) in inputs
            if shared:  # returned an input (as_tensor, to, ...): real CUDA would copy it
                return vmove(t, want_st == "cuda")
            set_state(t, want_st)
            return t
        return pytree.tree_map(fix, out)

    def _factory(self, func, args, kwargs, dev):
        g = kwargs.get("generator")
        want = dev if dev is not None else None
        if want is None and func in _RANDOM_FACTORIES and not any(
                isinstance(a, torch.Tensor) for a in pytree.arg_tree_leaves(*args)):
            want = CPU  # default device of a factory
        if (g is not None and want is not None and want.type in ("cuda", "cpu")
                and gen_device(g).type in ("cuda", "cpu") and gen_device(g).type != want.type):
            self.vc.problem(f"Expected a '{want.type}' device type for generator but found "
                            f"'{gen_device(g).type}' (in {getattr(func, '__name__', func)})")
        if dev is None or dev.type not in ("cuda", "cpu"):
            _ctx.stack.append("c")
            try:
                return func(*args, **kwargs)
            finally:
                _ctx.stack.pop()
        kwargs = dict(kwargs, device="cpu")
        _ctx.stack.append("c")
        try:
            out = func(*args, **kwargs)
        finally:
            _ctx.stack.pop()
        return self._retag(out, "cuda" if dev.type == "cuda" else "cpu", args)


# ops that may legally take tensors on different devices
_CROSS_OK = {"copy_", "_copy_from", "_copy_from_and_resize", "_to_copy", "lift_fresh",
             "lift_fresh_copy", "_local_scalar_dense", "detach", "alias", "_has_same_storage_numel",
             "is_same_size", "_nested_tensor_from_tensor_list", "set_"}
_INDEX_OPS = {"index", "index_put", "index_put_", "_index_put_impl_", "_unsafe_index",
              "_unsafe_index_put"}
# ops whose 0-dim value tensor may be on any device (index_put_ moves it; fills use .item())
_VALUE_ANY_DEVICE = {"index_put", "index_put_", "_index_put_impl_", "masked_fill", "masked_fill_",
                     "fill", "fill_", "index_fill", "index_fill_"}
# non-pointwise ops where a 0-dim CPU tensor is accepted with CUDA tensors (value arguments)
_SCALAR_OK = {"masked_fill", "masked_fill_", "index_put", "index_put_", "_index_put_impl_",
              "fill", "fill_", "index_fill", "index_fill_", "masked_scatter", "where",
              "clamp", "clamp_", "clamp_min", "clamp_max", "addcmul", "addcdiv", "lerp", "lerp_"}


class _VDispatch(TorchDispatchMode):
    """aten-level side: the device rule of every op, and tagging of its outputs."""

    def __init__(self, vc: VirtualCuda):
        super().__init__()
        self.vc = vc

    def __torch_dispatch__(self, func, types_, args=(), kwargs=None):
        kwargs = kwargs or {}
        with torch._C.DisableTorchFunction():
            name = func.overloadpacket.__name__
            leaves = pytree.arg_tree_leaves(*args, **kwargs)
            tensors = [t for t in leaves if isinstance(t, torch.Tensor)]
            if name not in _CROSS_OK:
                self._check(func, name, args, kwargs, tensors, leaves)
            out = func(*args, **kwargs)
            self._propagate(name, args, tensors, out)
        return out

    def _check(self, func, name, args, kwargs, tensors, leaves):
        gens = [g for g in leaves if isinstance(g, _RealGenerator)]
        if not tensors:
            return
        states = [state(t) for t in tensors]
        if "cuda" not in states and not any(isinstance(g, VCudaGenerator) for g in gens):
            return  # nothing on the GPU: nothing to mix (fast path)
        self.vc.cuda_ops += 1
        inplace = name.endswith("_") or torch.Tag.inplace in func.tags or "out" in kwargs
        if name.startswith("_foreach_"):
            return self._check_foreach(name, args, kwargs)
        index_ids = set()
        if name in _INDEX_OPS and len(args) > 1:
            index_ids = {id(t) for t in args[1] if isinstance(t, torch.Tensor)}
        scalar_ok = torch.Tag.pointwise in func.tags or name in _SCALAR_OK
        self_t = args[0] if args and isinstance(args[0], torch.Tensor) else None
        devs, desc = set(), []
        for t, st in zip(tensors, states, strict=True):
            if st in ("other", "wild"):
                continue
            if id(t) in index_ids:
                continue  # checked below
            if (st == "cpu" and t.dim() == 0 and scalar_ok
                    and not (inplace and t is self_t) and t is not kwargs.get("out")):
                continue  # a CPU scalar is fine in a CUDA TensorIterator op
            if name in _VALUE_ANY_DEVICE and t is not self_t and t.dim() == 0:
                continue  # a 0-dim value is moved (index_put_) or read with .item() (fills)
            devs.add(st)
            desc.append(_describe(t))
        if len(devs) > 1:
            self.vc.problem(f"device mix in aten.{func.name().split('::')[-1]}: Expected all "
                            f"tensors to be on the same device, got " + ", ".join(desc))
            return
        main = next(iter(devs), None)
        if index_ids:
            for t in args[1]:
                if isinstance(t, torch.Tensor) and state(t) == "cuda" and main == "cpu":
                    self.vc.problem(f"device mix in aten.{name}: indices should be either on cpu "
                                    f"or on the same device as the indexed tensor (cpu); got index "
                                    f"{_describe(t)} for {_describe(args[0])}")
        for g in gens:
            if main is not None and gen_device(g).type != ("cuda" if main == "cuda" else "cpu"):
                self.vc.problem(f"generator mix in aten.{name}: Expected a '{_vdev_name(main)}' "
                                f"generator, got {_describe(g)}")

    def _check_foreach(self, name, args, kwargs):
        lists = [a for a in args if isinstance(a, (list, tuple)) and a
                 and any(isinstance(x, torch.Tensor) for x in a)]
        scalars = [a for a in args if isinstance(a, torch.Tensor)]
        if not lists:
            return
        for i in range(len(lists[0])):
            devs, desc = set(), []
            for lst in lists:
                t = lst[i] if i < len(lst) else None
                if not isinstance(t, torch.Tensor):
                    continue
                st = state(t)
                if st in ("other", "wild"):
                    continue
                devs.add(st)
                desc.append(_describe(t))
            if len(devs) > 1:
                self.vc.problem(f"device mix in aten.{name} (element {i}): " + ", ".join(desc))
                return
        first = lists[0][0]
        for s in scalars:
            if state(s) in ("cuda", "cpu") and state(first) in ("cuda", "cpu") and \
                    state(s) != state(first):
                self.vc.problem(f"device mix in aten.{name}: scalar tensor expected to be on "
                                f"{_vdev_name(state(first))} but is on {_vdev_name(state(s))}")

    def _propagate(self, name, args, tensors, out):
        if name in ("copy_", "_copy_from", "_copy_from_and_resize", "set_", "detach", "alias",
                    "_local_scalar_dense"):
            return  # the output is (a view of) the destination, or no tensor
        factory = not tensors or name in ("lift_fresh", "lift_fresh_copy")
        if factory:
            # a factory Python called (torch.zeros, torch.tensor) is CPU; one made inside torch's
            # own code (C++ autograd, a Python torch function's body) is "wild": fits anywhere
            target = "wild" if (_ctx.stack and _ctx.stack[-1] == "py") else None
            if target == "wild":
                k = (_ctx.py_funcs[-1] if _ctx.py_funcs else "?", name)
                self.vc.wild_made[k] = self.vc.wild_made.get(k, 0) + 1
        else:
            sts = {state(t) for t in tensors}
            wild = sts <= {"wild", "other"} and "wild" in sts
            target = "cuda" if "cuda" in sts else ("wild" if wild else None)
        if target is None:
            return
        inputs = {_key(t) for t in tensors}
        for t in pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor):
                st = state(t)
                if st == "cuda" or st == "other":
                    continue
                if _key(t) in inputs:
                    continue  # in place / a view: its memory stays where it is
                set_state(t, target)


@contextlib.contextmanager
def virtual_cuda(mode: str = "raise", anomaly: bool = False,
                 fake_processes: int | None = None) -> Iterator[VirtualCuda]:
    vc = VirtualCuda(mode=mode, anomaly=anomaly, fake_processes=fake_processes)
    with vc:
        yield vc


def tag(t: torch.Tensor) -> torch.Tensor:
    """Mark ``t`` (in place) as living on the virtual GPU (tests)."""
    set_state(t, "cuda")
    return t


def main(argv: list[str]) -> int:
    import runpy
    mode = "raise"
    if argv and argv[0] == "--record":
        mode, argv = "record", argv[1:]
    if not argv:
        print(__doc__)
        return 2
    vc = VirtualCuda(mode=mode)
    rc = 0
    with vc:
        try:
            if argv[0] == "-m":
                sys.argv = [argv[1], *argv[2:]]
                runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
            else:
                sys.argv = argv
                runpy.run_path(argv[0], run_name="__main__")
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    if mode == "record":
        print(vc.report(), file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
