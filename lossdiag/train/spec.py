"""Load a model file (CONTRACT section 1) or user objects, and validate what they return."""
from __future__ import annotations

import copy
import dataclasses
import importlib.util
import inspect
import itertools
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional

import torch

from lossdiag.config import parse_main, parse_weights, resolve
from lossdiag.errors import SpecError
from lossdiag.record.inputs import check_scalar_terms

LossesFn = Callable[[torch.nn.Module, Any], Mapping[str, torch.Tensor]]


def default_optimizer(params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """The optimizer used when the model file defines none (CONTRACT section 1)."""
    return torch.optim.Adam(params, lr=1e-3)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """What lossdiag needs from a user: how to build the model, feed it and score it."""

    source: str
    build_model: Callable[[], torch.nn.Module]
    batches: Callable[[], Iterable[Any]]
    losses: LossesFn
    weights: Mapping[str, float]
    make_optimizer: Callable[[Iterable[torch.nn.Parameter]], torch.optim.Optimizer]
    validate: Optional[Callable[[torch.nn.Module], Mapping[str, float]]] = None
    target_shares: Optional[Mapping[str, float]] = None
    validation_batches: Optional[Callable[[], Iterable[Any]]] = None
    main: tuple[str, ...] = ()

    def user_error(self, message: str) -> SpecError:
        """A usage error that names the model source."""
        return SpecError(f"{self.source}: {message}")


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def call_user(spec: ModelSpec, what: str, function: Callable[..., Any], *args: Any) -> Any:
    """Call the user's code; an exception it raises becomes a usage error naming the call (`what`)."""
    try:
        return function(*args)
    except SpecError:
        raise
    except Exception as exc:
        raise spec.user_error(f"{what} raised {_describe(exc)}") from exc
    except SystemExit as exc:
        raise spec.user_error(f"{what} called sys.exit({exc.code!r}); it must return instead") from exc


def load_model_file(path: str | Path) -> ModelSpec:
    """Import a model file by path, its folder first on sys.path, and check the names it must define."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"{path}: no such model file")
    if path.suffix != ".py":
        raise SpecError(f"{path}: a model file must be a Python file ending in .py")
    folder = str(path.resolve().parent)
    module_name = f"lossdiag_model_{abs(hash(str(path.resolve())))}"
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(module_spec)
    sys.path.insert(0, folder)
    sys.modules[module_name] = module
    try:
        module_spec.loader.exec_module(module)
    except BaseException as exc:  # noqa: BLE001 - any import failure is the user's file failing
        sys.modules.pop(module_name, None)
        if isinstance(exc, (KeyboardInterrupt, SpecError)):
            raise
        raise SpecError(f"{path}: raised {_describe(exc)} while being imported") from exc
    finally:
        if folder in sys.path:
            sys.path.remove(folder)
    return spec_from_namespace(vars(module), str(path))


def spec_from_namespace(names: Mapping[str, Any], source: str) -> ModelSpec:
    """Build a ModelSpec from a model file's global names, naming each missing or wrong one."""
    for required, shape in (("build_model", "build_model()"), ("batches", "batches()"),
                            ("losses", "losses(model, batch)")):
        if required not in names:
            raise SpecError(f"{source}: defines no '{required}'; a model file must define {shape}")
        if not callable(names[required]):
            raise SpecError(f"{source}: '{required}' must be a function {shape}, "
                            f"got {type(names[required]).__name__}")
    make_optimizer = names.get("make_optimizer", default_optimizer)
    if not callable(make_optimizer):
        raise SpecError(f"{source}: 'make_optimizer' must be a function make_optimizer(params)")
    validate = names.get("validate")
    if validate is not None and not callable(validate):
        raise SpecError(f"{source}: 'validate' must be a function validate(model)")
    weights = names.get("weights") or {}
    weights = parse_weights(weights, f"{source}: 'weights'") if weights else {}
    targets = names.get("target_shares")
    targets = resolve({"target_shares": targets}, source=source).target_shares if targets else None
    validation = names.get("validation_batches")
    if validation is not None and not callable(validation):
        raise SpecError(f"{source}: 'validation_batches' must be a function validation_batches(), "
                        f"got {type(validation).__name__}")
    return ModelSpec(source, names["build_model"], names["batches"], names["losses"], weights,
                     make_optimizer, validate, targets, validation,
                     tuple(parse_main(names["main"], f"{source}: 'main'")) if names.get("main") is not None else ())


def spec_from_objects(model: Any, batches: Any, losses: LossesFn,
                      weights: Mapping[str, float] | None = None,
                      make_optimizer: Callable | None = None,
                      validation_batches: Any = None) -> ModelSpec:
    """Build a ModelSpec from objects; a module passed in is copied, never trained in place. `validation_batches`
    (an iterable or a function returning one) plays the model file's validation_batches()."""
    if isinstance(model, torch.nn.Module):
        pristine = copy.deepcopy(model)
        build_model = lambda: copy.deepcopy(pristine)  # noqa: E731
    elif callable(model):
        build_model = model
    else:
        raise SpecError(f"model must be an nn.Module or a function returning one, got {type(model).__name__}")
    if not callable(losses):
        raise SpecError(f"losses must be a function losses(model, batch), got {type(losses).__name__}")
    batches_fn = batches if callable(batches) else _replayable(batches)
    weights = parse_weights(weights, "weights") if weights else {}
    validation = None
    if validation_batches is not None:
        validation = validation_batches if callable(validation_batches) else _replayable(validation_batches)
    return ModelSpec("<objects>", build_model, batches_fn, losses, weights, make_optimizer or default_optimizer,
                     validation_batches=validation)


def _replayable(iterable: Any) -> Callable[[], Iterable[Any]]:
    """Turn an iterable into batches(); a one-shot iterator is cached so later passes replay it.

    A reusable iterable (a list, a DataLoader) is not iterated here: a shuffling DataLoader draws its seed from
    torch's generator when iteration starts, and that belongs inside the seeded run.
    """
    if not any(hasattr(type(iterable), name) for name in ("__iter__", "__getitem__")):
        raise SpecError(f"batches must be an iterable or a function returning one, got {type(iterable).__name__}")
    if not isinstance(iterable, Iterator):
        return lambda: iterable
    iterator = iterable
    seen: list[Any] = []

    def replay() -> Iterable[Any]:
        if seen:
            return iter(seen)
        return (seen.append(batch) or batch for batch in iterator)

    return replay


def build(spec: ModelSpec) -> torch.nn.Module:
    """Call build_model() and check that it returned a module."""
    model = call_user(spec, "build_model()", spec.build_model)
    if not isinstance(model, torch.nn.Module):
        raise spec.user_error(f"build_model() must return a torch.nn.Module, got {type(model).__name__}")
    if not any(parameter.requires_grad for parameter in model.parameters()):
        raise spec.user_error(f"build_model() returned a {type(model).__name__} with no trainable parameter: "
                              f"there is nothing for the terms to train")
    return model


def make_optimizer(spec: ModelSpec, model: torch.nn.Module) -> torch.optim.Optimizer:
    """Call make_optimizer(params) and check that it returned an optimizer."""
    optimizer = call_user(spec, "make_optimizer(params)", spec.make_optimizer, model.parameters())
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise spec.user_error(f"make_optimizer(params) must return a torch.optim.Optimizer, "
                              f"got {type(optimizer).__name__}")
    name = type(optimizer).__name__
    if _needs_closure(optimizer):
        raise spec.user_error(f"make_optimizer(params) returned {name}, whose step() needs a closure that evaluates "
                              f"the loss again; lossdiag steps once per batch without one: use an optimizer whose "
                              f"closure is optional (Adam, SGD, ...)")
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    if not any(id(p) in held for p in model.parameters() if p.requires_grad):
        raise spec.user_error(f"make_optimizer(params) returned {name} holding none of the model's trainable "
                              f"parameters, so training would change nothing; build it from the params it is given")
    return optimizer


def _needs_closure(optimizer: torch.optim.Optimizer) -> bool:
    """Whether the optimizer's step() requires a closure argument (LBFGS), which a plain training step cannot give."""
    try:
        parameters = inspect.signature(optimizer.step).parameters
    except (TypeError, ValueError):
        return False
    return any(p.default is inspect.Parameter.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
               for p in parameters.values())


def batch_stream(spec: ModelSpec) -> Iterator[Any]:
    """Yield batches forever, calling batches() again whenever it runs out."""
    for pass_number in itertools.count():
        iterator = call_user(spec, "batches()", lambda: iter(spec.batches()))
        empty = True
        for batch in _user_iteration(spec, iterator):
            empty = False
            yield batch
        if empty:
            when = "" if pass_number == 0 else f" on pass {pass_number + 1}"
            raise spec.user_error(f"batches() yielded nothing{when}; it must yield at least one batch")


def validation_stream(spec: ModelSpec) -> Iterator[Any]:
    """One pass of validation_batches(); one that yields nothing is a usage error."""
    iterator = call_user(spec, "validation_batches()", lambda: iter(spec.validation_batches()))
    empty = True
    for batch in _user_iteration(spec, iterator, "validation_batches()"):
        empty = False
        yield batch
    if empty:
        raise spec.user_error("validation_batches() yielded nothing; it must yield at least one batch")


def _user_iteration(spec: ModelSpec, iterator: Iterator[Any], what: str = "batches()") -> Iterator[Any]:
    """Iterate the user's batches; an exception raised while iterating is a usage error (as call_user's)."""
    end = object()
    while (batch := call_user(spec, f"iterating {what}", next, iterator, end)) is not end:
        yield batch


def to_device(batch: Any, device: torch.device | str | None) -> Any:
    """Move every tensor in a batch (nested tuples, lists and dicts) to a device."""
    if device is None:
        return batch
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, Mapping):
        return {key: to_device(value, device) for key, value in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):
        return type(batch)(*(to_device(v, device) for v in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def compute_terms(spec: ModelSpec, model: torch.nn.Module, batch: Any,
                  expected: list[str] | None, when: str = "") -> dict[str, torch.Tensor]:
    """Call losses(model, batch) and check it returned the same scalar tensors every time; `when` (' at step 30')
    goes into the message of an exception it raises."""
    terms = call_user(spec, f"losses(model, batch){when}", spec.losses, model, batch)
    return check_terms(terms, expected, spec.source)


def check_main(spec: ModelSpec, main: Optional[list[str]], names: list[str]) -> None:
    """Every `main` term (model file or --main) must be one of the terms losses(model, batch) returns."""
    unknown = [t for t in main or [] if t not in names]
    if unknown:
        raise spec.user_error(f"'main' names {', '.join(repr(t) for t in unknown)}, not among the terms "
                              f"losses(model, batch) returns: {', '.join(names)}")


def check_terms(terms: Any, expected: list[str] | None, source: str) -> dict[str, torch.Tensor]:
    """Validate losses(model, batch)'s mapping of term name to scalar tensor, with the names seen first."""
    where = f"{source}: " if source else ""
    checked = check_scalar_terms(terms, where, "losses(model, batch)")
    if expected is not None and list(checked) != expected:
        raise SpecError(f"{where}term names changed between batches: first {expected}, now {list(checked)}")
    return checked
