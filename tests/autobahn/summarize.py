#!/usr/bin/env python3
"""Summarize an Autobahn|Testsuite report directory.

Usage: summarize.py OUTDIR   (reads OUTDIR/index.json and the per-case JSON files)
Exit status 0 only if every case has behavior and behaviorClose in {OK, INFORMATIONAL}.
Works with Python 2.7 and 3.
"""
from __future__ import print_function

import json
import os
import sys
from collections import Counter

GOOD = ("OK", "INFORMATIONAL")
ORDER = ["OK", "NON-STRICT", "FAILED", "INFORMATIONAL", "UNIMPLEMENTED", "WRONG CODE"]


def case_key(cid):
    return tuple(int(p) if p.isdigit() else p for p in cid.split("."))


def counts_line(counter):
    keys = [k for k in ORDER] + sorted(k for k in counter if k not in ORDER)
    return ", ".join("%s=%d" % (k, counter.get(k, 0)) for k in keys if k in ORDER or counter.get(k))


def main():
    if len(sys.argv) != 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    outdir = sys.argv[1]
    with open(os.path.join(outdir, "index.json")) as f:
        index = json.load(f)

    if not index or not any(index.values()):
        print("ERROR: %s/index.json has no results (server unreachable?)" % outdir)
        return 2
    ok_all = True
    for agent in sorted(index):
        cases = index[agent]
        beh = Counter(c.get("behavior") for c in cases.values())
        behc = Counter(c.get("behaviorClose") for c in cases.values())
        print("Agent: %s" % agent)
        print("Total cases: %d" % len(cases))
        print("behavior:      %s" % counts_line(beh))
        print("behaviorClose: %s" % counts_line(behc))

        bad = [cid for cid in sorted(cases, key=case_key)
               if cases[cid].get("behavior") not in GOOD
               or cases[cid].get("behaviorClose") not in GOOD]
        if not bad:
            print("All cases OK/INFORMATIONAL.")
            continue
        ok_all = False
        print("\nCases not OK/INFORMATIONAL (%d):" % len(bad))
        for cid in bad:
            c = cases[cid]
            detail = {}
            rf = c.get("reportfile")
            if rf:
                try:
                    with open(os.path.join(outdir, rf)) as f:
                        detail = json.load(f)
                except (IOError, OSError, ValueError) as e:
                    detail = {"result": "<could not read %s: %s>" % (rf, e)}
            print("- %s  behavior=%s behaviorClose=%s  (report: %s)"
                  % (cid, c.get("behavior"), c.get("behaviorClose"), rf))
            for k in ("description", "result", "resultClose"):
                v = detail.get(k)
                if v:
                    print("    %s: %s" % (k, " ".join(str(v).split())))
        print()
    return 0 if ok_all else 1


if __name__ == "__main__":
    sys.exit(main())
