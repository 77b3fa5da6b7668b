"""The machine a run measured: CPU model, cores, memory, Python and server versions (Linux)."""

from __future__ import annotations

import os
import platform

import redis


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def memory_total_mb() -> int | None:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024 // 1_000_000
    except OSError:
        pass
    return None


def describe(client: redis.Redis) -> dict:
    info = client.info("server")
    return {
        "cpu_model": cpu_model(),
        "nproc": os.cpu_count(),
        "memory_total_mb": memory_total_mb(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "server": "valkey" if "valkey_version" in info else "redis",
        "server_version": str(info.get("valkey_version") or info.get("redis_version")),
        "redis_compatible_version": str(info.get("redis_version")),
    }
