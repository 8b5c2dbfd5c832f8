"""The report's style sheet (inline in the HTML: nothing is fetched)."""

CSS = """
:root{--fg:#1c2230;--muted:#5f6878;--line:#e4e7ee;--soft:#f5f6f9;--accent:#3553c8;--ref:#fff6dc;--best:#10233f}
*{box-sizing:border-box}
body{margin:0;background:var(--soft);color:var(--fg);font:15px/1.55 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1280px;margin:0 auto;background:#fff;padding:28px 40px 64px;min-height:100vh;box-shadow:0 0 0 1px var(--line)}
h1{font-size:27px;margin:0 0 4px;letter-spacing:-.01em}
h2{font-size:20px;margin:40px 0 12px;padding-top:8px;border-top:1px solid var(--line)}
h3{font-size:15.5px;margin:22px 0 8px}
.meta{color:var(--muted);font-size:13px;margin-bottom:14px}
.lead{max-width:900px;color:#333b4a}
nav{display:flex;flex-wrap:wrap;gap:6px 14px;font-size:13.5px;margin:12px 0 4px}
nav a{color:var(--accent);text-decoration:none}
nav a:hover{text-decoration:underline}
table{border-collapse:collapse;font-variant-numeric:tabular-nums;font-size:13px;margin:6px 0}
th,td{padding:5px 8px;border-bottom:1px solid var(--line);text-align:right;vertical-align:top;white-space:nowrap}
th:first-child,td:first-child,td.l,th.l{text-align:left}
thead th{background:var(--soft);font-weight:600;vertical-align:bottom;border-bottom:2px solid #d5d9e2;white-space:normal}
th.c{text-align:center}
th small{font-weight:400;color:var(--muted)}
tbody tr:hover td{background:#f9fafc}
tr.reference td{background:var(--ref)}
tr.group td{color:var(--muted);font-style:italic;text-align:left;background:none;padding-top:12px}
td.best{font-weight:700;color:var(--best)}
td.missing{color:#a0a6b2;font-style:italic}
.pm{color:var(--muted);font-weight:400}
.sub{display:block;color:var(--muted);font-size:11.5px;font-weight:400}
.oracle{color:#7a5b00}
th.oracle{background:#fbf3da}
.badge{display:inline-block;font-size:10.5px;font-weight:600;padding:0 6px;border-radius:9px;background:#f2d78b;color:#5b4300;vertical-align:1px;letter-spacing:.02em}
.badge.ref{background:#dbe4ff;color:#2b3f9e}
.scroll{overflow-x:auto;max-width:100%}
.note{color:var(--muted);font-size:12.5px;max-width:950px}
.plots{display:grid;grid-template-columns:repeat(auto-fill,minmax(430px,1fr));gap:14px}
figure{margin:0;background:#fff;border:1px solid var(--line);border-radius:8px;padding:8px}
figure img{display:block;width:100%;height:auto}
figcaption{font-size:12.5px;color:var(--muted);padding:4px 2px 0}
.strip figure{margin:8px 0}
.method{margin-top:8px}
.desc{color:#3b4352;margin:-4px 0 8px}
.empty{color:var(--muted);font-style:italic;font-size:13px}
details{margin:6px 0}
summary{cursor:pointer;color:var(--accent);font-size:13.5px}
pre{background:var(--soft);border:1px solid var(--line);border-radius:6px;padding:10px 12px;font-size:12px;line-height:1.45;overflow:auto;max-height:460px}
code{background:var(--soft);padding:0 4px;border-radius:4px;font-size:12.5px}
footer{margin-top:48px;color:var(--muted);font-size:12px;border-top:1px solid var(--line);padding-top:12px}
"""
