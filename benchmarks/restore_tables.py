"""Markdown tables of a ``bench_restore.py`` report (``--markdown REPORT.json``)."""

from __future__ import annotations


def _first(row: dict, name: str) -> str:
    entry = row.get(name) or {}
    if "first" not in entry:
        return "-"
    return f"{entry['first']['seconds']:.1f} ({entry['first']['cpu_seconds']:.1f})"


def _peak(row: dict, name: str) -> str:
    entry = row.get(name) or {}
    return f"{entry['peak_gib']:.2f}" if "peak_gib" in entry else "-"


def markdown(report: dict) -> str:
    """The report as Markdown tables (steady state, first calls, memory, quality)."""
    lines = [(f"CPU: {report['cpu']} ({report['cores']} cores), torch {report['torch']}, "
             f"OpenVINO {report['openvino']}, threads {report['threads'] or 'automatic'}, "
             f"load average {report['load_before']} before, {report['load_after']} after."), ""]

    def rate(entry: dict | None, part: str, key: str) -> str:
        if not entry or "error" in entry or part not in entry:
            return "-"
        return f"{entry[part][key]:.3f}"

    def ratio(a: dict | None, b: dict | None, key: str) -> str:
        if not a or not b or "steady" not in a or "steady" not in b:
            return "-"
        return f"{a['steady'][key] / b['steady'][key]:.2f}x"

    for setting in report["settings"]:
        lines += [f"### {setting['label']}", "",
                  ("| image | defaults Mpix/s | eager Mpix/s | plain fp32 Mpix/s | "
                  "defaults / eager (wall) | defaults / eager (CPU time) | "
                  "defaults / plain (CPU time) | defaults: backend, precision, tile |"),
                  "|---|---|---|---|---|---|---|---|"]
        for row in setting["rows"]:
            warm, eager, plain = (row.get(k) for k in ("defaults warm", "eager", "plain fp32"))
            lines.append(
                f"| {row['size']}² | {rate(warm, 'steady', 'mpix_s')} | "
                f"{rate(eager, 'steady', 'mpix_s')} | {rate(plain, 'steady', 'mpix_s')} | "
                f"{ratio(warm, eager, 'mpix_s')} | {ratio(warm, eager, 'mpix_per_cpu_s')} | "
                f"{ratio(warm, plain, 'mpix_per_cpu_s')} | {warm.get('backend')}, "
                f"{warm.get('openvino_precision') or warm.get('precision')}, {warm.get('tile')} px |")
        lines += ["", ("| image | defaults, first call with an empty cache: s (CPU s) | "
                       "defaults, first call, cached | eager, first call | peak GiB, "
                       "defaults | peak GiB, eager | peak GiB, plain fp32 |"),
                  "|---|---|---|---|---|---|---|"]
        for row in setting["rows"]:
            lines.append(f"| {row['size']}² | {_first(row, 'defaults cold')} | "
                         f"{_first(row, 'defaults warm')} | {_first(row, 'eager')} | "
                         f"{_peak(row, 'defaults warm')} | {_peak(row, 'eager')} | "
                         f"{_peak(row, 'plain fp32')} |")
        isa = next((row[k]["isa"] for row in setting["rows"] for k in row
                    if isinstance(row[k], dict) and "isa" in row[k]), None)
        if isa:
            lines += ["", (f"Kernels under the cap: torch's oneDNN reports ISA "
                      f"`{isa.get('torch_isa')}`, convolutions `{isa.get('torch_conv')}`; "
                      f"OpenVINO f32 `{isa.get('openvino_conv_f32')}`, bf16 hint "
                      f"`{isa.get('openvino_conv_bf16')}`.")]
        quality = setting.get("quality")
        if quality and "error" not in quality:
            lines += ["", (f"Quality ({quality['cases']} real held-out cases, PSNR against the "
                      f"clean image minus eager fp32's): defaults ({quality['defaults_backend']}"
                      f", {quality['defaults_precision']}) mean "
                      f"{quality['defaults_mean_db']:+.4f} dB, worst "
                      f"{quality['defaults_worst_db']:+.4f} dB; eager mean "
                      f"{quality['eager_mean_db']:+.4f} dB, worst "
                      f"{quality['eager_worst_db']:+.4f} dB.")]
        lines.append("")
    return "\n".join(lines)
