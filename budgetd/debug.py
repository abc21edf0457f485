"""Debug instrumentation, off by default and enabled per component.

    debug_log("ledger", "batch of %d committed in %.1f ms", n, ms)

    @log_function("allocator")
    async def decide(...): ...

Enable with `BUDGETD_DEBUG=ledger,allocator` (or `all`), or the config's
`log.debug`. When a component is off, `debug_log` is one set lookup and the
message is never formatted; `log_function` adds one lookup per call. Argument
values are not logged (they may carry prompts or keys) unless
`BUDGETD_DEBUG_ARGS=1` asks for them.
"""

import functools
import inspect
import logging
import os
import time
from typing import Any, Callable, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

_enabled: set[str] = set()
_log_args = False


def configure(components: list[str] | set[str] | None = None, log_args: bool | None = None) -> None:
    """Set what is enabled: the given components plus those named by `BUDGETD_DEBUG`."""
    global _log_args
    _enabled.clear()
    _enabled.update(c.strip() for c in (components or ()) if c.strip())
    _enabled.update(c.strip() for c in os.environ.get("BUDGETD_DEBUG", "").split(",") if c.strip())
    _log_args = os.environ.get("BUDGETD_DEBUG_ARGS") == "1" if log_args is None else log_args
    logging.getLogger("budgetd.debug").setLevel(logging.DEBUG if _enabled else logging.NOTSET)


def enabled(component: str) -> bool:
    return component in _enabled or "all" in _enabled


def debug_log(component: str, message: str, *args: Any) -> None:
    if component in _enabled or "all" in _enabled:
        logging.getLogger(f"budgetd.debug.{component}").debug(message, *args)


def _describe_args(args: tuple, kwargs: dict) -> str:
    if not _log_args:
        return f"({len(args)} args, {len(kwargs)} kwargs)"
    parts = [repr(a)[:200] for a in args] + [f"{k}={v!r}"[:200] for k, v in kwargs.items()]
    return "(" + ", ".join(parts) + ")"


def log_function(component: str) -> Callable[[F], F]:
    """Log entry, exit, duration and exceptions of a sync or async function."""

    def decorate(fn: F) -> F:
        name = fn.__qualname__
        logger = logging.getLogger(f"budgetd.debug.{component}")

        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                if component not in _enabled and "all" not in _enabled:
                    return await fn(*args, **kwargs)
                start = time.perf_counter()
                logger.debug("-> %s%s", name, _describe_args(args, kwargs))
                try:
                    result = await fn(*args, **kwargs)
                except BaseException as exc:
                    logger.debug("<- %s raised %s after %.3f ms", name, type(exc).__name__,
                                 (time.perf_counter() - start) * 1e3)
                    raise
                logger.debug("<- %s in %.3f ms", name, (time.perf_counter() - start) * 1e3)
                return result

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if component not in _enabled and "all" not in _enabled:
                return fn(*args, **kwargs)
            start = time.perf_counter()
            logger.debug("-> %s%s", name, _describe_args(args, kwargs))
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                logger.debug("<- %s raised %s after %.3f ms", name, type(exc).__name__,
                             (time.perf_counter() - start) * 1e3)
                raise
            logger.debug("<- %s in %.3f ms", name, (time.perf_counter() - start) * 1e3)
            return result

        return wrapper  # type: ignore[return-value]

    return decorate
