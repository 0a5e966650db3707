#!/usr/bin/env python3
"""PDF extraction against poppler on a corpus of real-world PDFs.

usage: bench/pdfs.py STRATA_BIN PDF_DIR [--rounds N] [--json OUT]

For every file, three readers: Debian's `pdftotext` (the reference), `strata extract`
(poppler in a limited child when installed, as the server reads), and `strata extract
--pdf-reader builtin` (the parser compiled into strata). Each gets 30 s and 1 GiB.
A reader "gets text" when it prints at least one non-space character; its text is
"garbage" when more than a quarter of its visible characters are U+FFFD, U+FFFF/U+FFFE
(and other noncharacters) or private-use code points. Prints the table for BENCHMARKS.md
and every file where strata and pdftotext disagree; times are medians over alternated
rounds, as a ratio to pdftotext's.
"""
import json
import os
import resource
import statistics
import subprocess
import sys
import time

LIMIT_SECS = 30
LIMIT_BYTES = 1 << 30


def limit():
    resource.setrlimit(resource.RLIMIT_AS, (LIMIT_BYTES, LIMIT_BYTES))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def run(cmd):
    t = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, timeout=LIMIT_SECS, preexec_fn=limit)
        out, code, err = p.stdout, p.returncode, p.stderr.decode("utf-8", "replace")
    except subprocess.TimeoutExpired:
        out, code, err = b"", "timeout", "timeout"
    return out.decode("utf-8", "replace"), code, err.strip().splitlines()[-1:] , time.perf_counter() - t


def unreadable(c):
    u = ord(c)
    return (
        c == "\ufffd"
        or (0xFDD0 <= u <= 0xFDEF)
        or (u & 0xFFFE) == 0xFFFE
        or (0xE000 <= u <= 0xF8FF)
        or u >= 0xF0000
    )


def judge(text):
    visible = [c for c in text if not c.isspace() and c != "\f"]
    if not visible:
        return 0, False
    bad = sum(1 for c in visible if unreadable(c))
    return len(visible), bad * 4 > len(visible)


def main():
    args = sys.argv[1:]
    if len(args) < 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    strata, pdf_dir = args[0], args[1]
    rounds = int(args[args.index("--rounds") + 1]) if "--rounds" in args else 1
    out_json = args[args.index("--json") + 1] if "--json" in args else None
    files = sorted(f for f in os.listdir(pdf_dir) if f.lower().endswith(".pdf"))
    readers = {
        "pdftotext": lambda p: ["pdftotext", "-q", "-enc", "UTF-8", p, "-"],
        "strata": lambda p: [strata, "extract", p],
        "strata-builtin": lambda p: [strata, "extract", "--pdf-reader", "builtin", p],
    }
    results = {name: {} for name in readers}
    times = {name: [] for name in readers}
    for rnd in range(rounds):
        order = list(readers) if rnd % 2 == 0 else list(reversed(readers))
        for name in order:
            total = 0.0
            for f in files:
                text, code, err, secs = run(readers[name](os.path.join(pdf_dir, f)))
                total += secs
                chars, garbage = judge(text)
                results[name][f] = {"chars": chars, "garbage": garbage, "code": code, "err": err}
            times[name].append(total)
    ref = results["pdftotext"]
    # The yardstick: files from which pdftotext gets readable text.
    with_text = [f for f in files if ref[f]["chars"] > 0 and not ref[f]["garbage"]]
    rows = []
    for name in readers:
        r = results[name]
        got = [f for f in files if r[f]["chars"] > 0 and not r[f]["garbage"]]
        missed = [f for f in with_text if not (r[f]["chars"] > 0 and not r[f]["garbage"])]
        garbage = [f for f in files if r[f]["garbage"]]
        crashed = [f for f in files if r[f]["code"] not in (0, 1)]
        rows.append(
            {
                "reader": name,
                "files": len(files),
                "text": len(got),
                "missed_of_pdftotext": len(missed),
                "garbage": len(garbage),
                "crashed_or_timed_out": len(crashed),
                "seconds_median": statistics.median(times[name]),
                "missed": missed,
                "garbage_files": garbage,
            }
        )
    base = rows[0]["seconds_median"]
    print(f"{len(files)} PDFs in {pdf_dir}; pdftotext gets readable text from {len(with_text)}")
    print("| reader | files with readable text | of pdftotext's, missed | garbage | crashed / timed out | time (x pdftotext) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['reader']} | {r['text']} | {r['missed_of_pdftotext']} | {r['garbage']} | "
            f"{r['crashed_or_timed_out']} | {r['seconds_median']:.1f} s ({r['seconds_median'] / base:.2f}x) |"
        )
    for r in rows:
        for f in [f for f in files if results[r["reader"]][f]["code"] not in (0, 1)]:
            print(f"  {r['reader']} exit {results[r['reader']][f]['code']} on {f}: {results[r['reader']][f]['err']}")
    for r in rows:
        for f in r["missed"]:
            print(f"  {r['reader']} misses {f}: pdftotext {ref[f]['chars']} chars; "
                  f"{results[r['reader']][f]['chars']} chars, exit {results[r['reader']][f]['code']} "
                  f"{results[r['reader']][f]['err']}")
        for f in r["garbage_files"]:
            print(f"  {r['reader']} garbage in {f}")
    # Also every file where pdftotext prints anything, garbage included.
    anything = [f for f in files if ref[f]["chars"] > 0]
    strata_any = [f for f in anything if results["strata"][f]["chars"] > 0]
    print(f"pdftotext prints something for {len(anything)} files; strata reads {len(strata_any)} of them "
          f"(the rest: {sorted(set(anything) - set(strata_any))})")
    strata_chars = sum(results["strata"][f]["chars"] for f in with_text)
    ref_chars = sum(ref[f]["chars"] for f in with_text)
    print(f"visible characters on pdftotext's files: strata {strata_chars} / pdftotext {ref_chars} "
          f"= {strata_chars / max(ref_chars, 1):.3f}")
    if out_json:
        with open(out_json, "a") as fh:
            for r in rows:
                fh.write(json.dumps({"section": "pdfs", **{k: v for k, v in r.items()}}) + "\n")
    # The promise: every file pdftotext reads, strata reads, and none is garbage.
    sys.exit(0 if rows[1]["missed_of_pdftotext"] == 0 and rows[1]["garbage"] == 0 else 1)


if __name__ == "__main__":
    main()
