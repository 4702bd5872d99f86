#!/usr/bin/env python3
"""Check the paged ops table of a large HTML report in headless Chromium (docs/html-report.md).

    python3 scripts/bench/html_paged_check.py REPORT.html [--browser chromium]

A report of more than 2,000 ops shows its table a page of 1,000 rows at a time (the rows wait
gzip-compressed in packed script elements, unpacked when shown). This opens REPORT.html over the DevTools protocol (the pipe driver of
scripts/bench/html_open.py) and checks, against the JSON report embedded in the same page:

- the table holds one page, the one with the first divergence (its row marked `fd`), and the
  count line says which rows of how many;
- next / previous move a page, and stop at the ends; the same buttons below the table move it
  too (and bring the table's top back into view), and both pagers always say the same (count
  line, buttons enabled);
- a filter (regex on the name) keeps exactly the ops the embedded JSON's names match, and
  "diverging only" exactly its diverging ones;
- a click on a number column's header sorts every op by that number (nulls last), a second
  click the other way;
- the time of the first filter (it makes every row, detached) and of the sort.

Prints one line per check and exits 1 on the first that fails. Needs Debian's `chromium`.
"""
import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from html_open import Cdp  # noqa: E402

# Helpers defined in the page: the live rows' ids, the count line, the embedded report.
SETUP = r"""
(async () => {
const table = document.getElementById('ops-table');
const ready = () => table.ready || Promise.resolve();
window.__t = {
  ids: () => Array.from(table.tBodies[0].rows, r => +r.id.slice(3)),
  count: () => document.getElementById('count').textContent,
  ops: (await divergenceReport()).ops,
  fd: () => Array.from(table.tBodies[0].rows).filter(r => r.classList.contains('fd')).map(r => +r.id.slice(3)),
  filter: async (q, only) => { const b = document.getElementById('filter'); b.value = q;
    document.getElementById('only-div').checked = only;
    const t0 = performance.now(); b.dispatchEvent(new Event('input')); await ready(); return performance.now() - t0; },
  click: async id => { document.getElementById(id).click(); await ready(); },
  sort: async label => { const th = Array.from(document.querySelectorAll('#ops-table th')).find(h => h.textContent === label);
    const t0 = performance.now(); th.click(); await ready(); return performance.now() - t0; },
  cell: (label) => { const c = Array.from(document.querySelectorAll('#ops-table th')).findIndex(h => h.textContent.replace(/[\u25b2\u25bc]/g, '') === label);
    return Array.from(table.tBodies[0].rows, r => r.cells[c].getAttribute('data-v')); },
};
await ready();
return true;
})()
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report")
    ap.add_argument("--browser", default="chromium")
    a = ap.parse_args()
    url = "file://" + os.path.abspath(a.report)
    failed = []

    def check(what, ok, detail=""):
        print(f"{'ok  ' if ok else 'FAIL'} {what}{': ' + str(detail) if detail else ''}")
        if not ok:
            failed.append(what)

    with tempfile.TemporaryDirectory() as profile:
        cdp = Cdp(a.browser, profile)
        try:
            tid = cdp.send("Target.createTarget", {"url": "about:blank"})["targetId"]
            sid = cdp.send("Target.attachToTarget", {"targetId": tid, "flatten": True})["sessionId"]
            cdp.send("Page.enable", session=sid)
            t0 = time.perf_counter()
            cdp.send("Page.navigate", {"url": url}, session=sid)
            cdp.wait_event("Page.loadEventFired", sid, timeout=300)
            print(f"     loaded in {(time.perf_counter() - t0) * 1000:.0f} ms (tab wall)")

            def ev(expr):
                r = cdp.send("Runtime.evaluate", {"expression": expr, "returnByValue": True,
                                                  "awaitPromise": True}, session=sid)
                if "exceptionDetails" in r:
                    raise RuntimeError(f"{expr}: {r['exceptionDetails']}")
                return r["result"].get("value")

            ev(SETUP)
            n = ev("__t.ops.length")
            page = 1000
            paged = ev("document.getElementById('ops-table').hasAttribute('data-paged')")
            check("the table is paged", paged and n > 2000, f"{n} ops")
            first = ev("(() => { const a = document.getElementById('ops-table').getAttribute('data-first'); return a === null ? null : +a; })()")
            ids = ev("__t.ids()")
            p0 = (first or 0) // page
            want = list(range(p0 * page, min(n, (p0 + 1) * page)))
            check("one page, the first divergence's", ids == want, f"rows {ids[:1]}..{ids[-1:]} of {n}")
            if first is not None:
                check("its row is marked", ev("__t.fd()") == [first], first)
            check("the count line", ev("__t.count()").startswith(f"{want[0] + 1}-{want[-1] + 1} of {n} ops"),
                  ev("__t.count()"))
            ev("__t.click('next')")
            nxt = ev("__t.ids()")
            if (p0 + 1) * page < n:
                check("next", nxt[0] == (p0 + 1) * page, nxt[:1])
            ev("(async () => { await __t.click('prev'); await __t.click('prev'); })()")
            check("prev", ev("__t.ids()")[0] == max(0, p0 - 1) * page)
            # The pager below the table: the same page moves, both pagers say the same.
            same = ("['prev', 'next', 'count'].every(id => { const a = document.getElementById(id), "
                    "b = document.getElementById(id + '-below'); return a.disabled === b.disabled "
                    "&& a.textContent === b.textContent; })")
            below = "document.getElementById('count-below').textContent"
            at = max(0, p0 - 1)
            if (at + 1) * page < n:
                ev("window.scrollTo(0, document.body.scrollHeight)")
                ev("__t.click('next-below')")
                top = ev("document.getElementById('ops').getBoundingClientRect().top")
                check("next below the table", ev("__t.ids()")[0] == (at + 1) * page and ev(same)
                      and abs(top) < 2, f"{ev(below)}, the table's section at {top:.0f} px")
                ev("__t.click('prev-below')")
                check("prev below the table", ev("__t.ids()")[0] == at * page and ev(same))
            for q, only in (("k_norm", False), ("", True), (r"layers\.3\.", True)):
                ms = ev(f"__t.filter({json.dumps(q)}, {json.dumps(only)})")
                names = ev(f"__t.ops.filter(o => new RegExp({json.dumps(q)}, 'i').test(o.name) && "
                           f"(!{json.dumps(only)} || ['diverged','shape_mismatch','nonfinite','no_finite'].includes(o.status)))"
                           ".map(o => o.name)")
                shown = []
                for _ in range((len(names) + page - 1) // page or 1):
                    shown += ev("Array.from(document.getElementById('ops-table').tBodies[0].rows, r => r.getAttribute('data-name'))")
                    ev("__t.click('next')")
                check(f"filter {q!r}{' diverging only' if only else ''}", shown == names,
                      f"{len(shown)} of {n} ops, {ms:.0f} ms; {ev('__t.count()')}")
            ev("__t.filter('', false)")
            # a metric sorts worst first (the largest) on its first click, then the other way
            ms = ev("__t.sort('rel err')")
            nums = [float(v) for v in ev("__t.cell('rel err')") if v is not None]
            top = max(float(o["rel_l2_err"]) for o in ev("__t.ops.filter(o => o.rel_l2_err !== null)"))
            check("sort by rel err, the largest first", nums == sorted(nums, reverse=True) and nums[0] == top
                  and ev("__t.ids()") != want, f"{ms:.0f} ms; {nums[:1]}")
            ev("__t.sort('rel err')")
            vals = ev("__t.cell('rel err')")
            nums = [float(v) for v in vals if v is not None]
            check("and ascending", nums == sorted(nums), nums[:1])
            if first is not None:
                # "show in the table" after a sort and a filter: the first divergence's page,
                # in execution order, its row there to scroll to
                ev("__t.filter('k_norm', true)")
                ev("__t.click('to-first')")
                check("show in the table", ev("__t.ids()") == want
                      and ev(f"!!document.getElementById('op-{first}')"), ev("__t.count()"))
            # Changes made while the rows are still being unpacked are all kept (a review: a
            # sort then a filter lost the sort; a filter then "previous" asked for page -1 and
            # threw): the page loaded afresh, a sort, a filter and "previous" at once.
            cdp.send("Page.navigate", {"url": url}, session=sid)
            cdp.wait_event("Page.loadEventFired", sid, timeout=300)
            ev(SETUP)
            ev("""(async () => {
              const th = Array.from(document.querySelectorAll('#ops-table th')).find(h => h.textContent === 'rel err');
              th.click();
              const b = document.getElementById('filter'); b.value = 'k_norm'; b.dispatchEvent(new Event('input'));
              document.getElementById('prev').click();
              await document.getElementById('ops-table').ready; })()""")
            names = ev("__t.ops.filter(o => /k_norm/i.test(o.name)).map(o => o.name)")
            shown = ev("Array.from(document.getElementById('ops-table').tBodies[0].rows, r => r.getAttribute('data-name'))")
            nums = [float(v) for v in ev("__t.cell('rel err')") if v is not None]
            aria = ev("document.querySelector('#ops-table th[aria-sort]') ? document.querySelector('#ops-table th[aria-sort]').textContent : null")
            check("a sort, a filter and a page move at once: all kept",
                  len(shown) == min(page, len(names)) and set(shown) <= set(names)
                  and nums == sorted(nums, reverse=True) and aria is not None and aria.startswith("rel err"),
                  f"{len(shown)} rows shown of {len(names)}, {ev('__t.count()')}")
        finally:
            cdp.close()
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
