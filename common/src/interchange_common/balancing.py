"""Client-side load balancing over one service's healthy instances, with passive
outlier detection.

Balancer.candidates()   the instances to try, in order: a weighted random order of
                        those neither ejected nor draining (weight w is w times as
                        likely to come first), then the draining ones, then the
                        ejected ones, soonest back first, as a last resort rather
                        than no answer at all
Balancer.draining       an instance said it is shutting down (an answer with
                        ``Connection: close``): it goes last for ``drain_hold_seconds``,
                        longer than the caller keeps an idle connection, so that no
                        request is sent on a kept-alive connection the instance is
                        about to close (a POST lost that way cannot be sent again).
                        Not a failure: nothing is ejected.
Balancer.succeeded/failed  what each call to an instance showed. An instance that
                        fails ``failures_to_eject`` calls in a row (or refuses a
                        connection: nothing listens there) is ejected for
                        ``eject_seconds`` times the number of times it has been ejected
                        in a row (capped); a success after its return resets that.
                        At most ``max_ejected_share`` of the instances are out at once.

Ejection state is a Prometheus gauge, ``upstream_instance_ejected{service, instance}``,
and each ejection or return is a log line.
"""

import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import Gauge

from interchange_common.discovery import Discovery, Instance

_log = logging.getLogger("interchange.balancing")

EJECTED = Gauge("upstream_instance_ejected", "1 while an instance is ejected", ["service", "instance"])


@dataclass
class _Outlier:
    failures: int = 0
    ejections: int = 0
    until: float = 0.0
    draining_until: float = 0.0


class Balancer:
    def __init__(
        self,
        *,
        service: str,
        discovery: Discovery,
        failures_to_eject: int = 3,
        eject_seconds: float = 5.0,
        max_eject_seconds: float = 60.0,
        max_ejected_share: float = 0.5,
        drain_hold_seconds: float = 6.0,
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.service = service
        self._discovery = discovery
        self._failures_to_eject = failures_to_eject
        self._eject_seconds = eject_seconds
        self._max_eject_seconds = max_eject_seconds
        self._max_share = max_ejected_share
        self._drain_hold = drain_hold_seconds
        self._clock = clock
        self._rng = rng
        self._outliers: dict[str, _Outlier] = {}

    async def candidates(self) -> list[Instance]:
        healthy = list(await self._discovery.healthy(service=self.service))
        self._forget_all_but(ids={instance.id for instance in healthy})
        now = self._clock()
        ejected = sorted((i for i in healthy if self._outlier(i).until > now), key=lambda i: self._outlier(i).until)
        # Never more than the share out: past it, the ones due back soonest are in.
        kept_out = ejected[max(0, len(ejected) - int(len(healthy) * self._max_share)) :]
        out = {i.id for i in kept_out}
        draining = [i for i in healthy if i.id not in out and self._outlier(i).draining_until > now]
        ready = [i for i in healthy if i.id not in out and i not in draining]
        return self._weighted_order(ready) + self._weighted_order(draining) + kept_out

    def draining(self, instance: Instance) -> None:
        outlier = self._outlier(instance)
        now = self._clock()
        if outlier.draining_until <= now:
            _log.info("instance draining", extra={"service": self.service, "instance": instance.id})
        outlier.draining_until = now + self._drain_hold

    def succeeded(self, instance: Instance) -> None:
        outlier = self._outlier(instance)
        outlier.failures = 0
        if outlier.ejections and outlier.until <= self._clock():
            outlier.ejections = 0
            EJECTED.labels(service=self.service, instance=instance.id).set(0)
            _log.info("instance back", extra={"service": self.service, "instance": instance.id})

    def failed(self, instance: Instance, *, refused: bool = False) -> None:
        outlier = self._outlier(instance)
        now = self._clock()
        if outlier.until > now:
            return  # already out
        outlier.failures += 1
        if refused or outlier.failures >= self._failures_to_eject:
            outlier.ejections += 1
            outlier.failures = 0
            seconds = min(self._max_eject_seconds, self._eject_seconds * outlier.ejections)
            outlier.until = now + seconds
            EJECTED.labels(service=self.service, instance=instance.id).set(1)
            _log.warning(
                "instance ejected",
                extra={"service": self.service, "instance": instance.id, "seconds": seconds, "refused": refused},
            )

    def ejected(self) -> set[str]:
        now = self._clock()
        return {instance for instance, outlier in self._outliers.items() if outlier.until > now}

    def _forget_all_but(self, *, ids: set[str]) -> None:
        """Instances discovery no longer lists leave no state or gauge behind."""
        for gone in self._outliers.keys() - ids:
            del self._outliers[gone]
            with contextlib.suppress(KeyError):  # never ejected: no gauge
                EJECTED.remove(self.service, gone)

    def _outlier(self, instance: Instance) -> _Outlier:
        outlier = self._outliers.get(instance.id)
        if outlier is None:
            outlier = self._outliers[instance.id] = _Outlier()
        return outlier

    def _weighted_order(self, instances: list[Instance]) -> list[Instance]:
        # Efraimidis-Spirakis: sort by u^(1/w), u uniform in (0, 1]; the first is a
        # weighted random choice, and so is each next one among the rest.
        return sorted(instances, key=lambda i: (1.0 - self._rng()) ** (1.0 / max(1, i.weight)), reverse=True)
