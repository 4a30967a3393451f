"""Each pipeline step printed with its duration as it runs, and recorded for the report."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TextIO

from mserve_contract.optimization_report import StepTiming


@dataclass
class StepRecord:
    name: str
    detail: str = ""


@dataclass
class StepLog:
    """Prints `[step] name ... 0.123s detail` lines and keeps the timings."""

    stream: TextIO = field(default_factory=lambda: sys.stdout)
    quiet: bool = False
    timings: list[StepTiming] = field(default_factory=list)

    @contextmanager
    def step(self, name: str) -> Iterator[StepRecord]:
        record = StepRecord(name)
        started = time.perf_counter()
        if not self.quiet:
            print(f"==> {name}", file=self.stream, flush=True)
        try:
            yield record
        finally:
            seconds = time.perf_counter() - started
            self.timings.append(StepTiming(name=name, seconds=round(seconds, 4), detail=record.detail))
            if not self.quiet:
                detail = f"  {record.detail}" if record.detail else ""
                print(f"    {name} done in {seconds:.3f}s{detail}", file=self.stream, flush=True)

    def note(self, text: str) -> None:
        if not self.quiet:
            print(f"    {text}", file=self.stream, flush=True)
