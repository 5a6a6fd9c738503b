"""The local Piper dashboard: see and decide in a browser what `piper-mcp local` does.

`piper-mcp local dashboard` (or `local serve --dashboard`) serves it on loopback. Its
parts: `sessions` (the one-time login link, the session cookie, CSRF tokens), `app`
(the pages and what guards them), `actions` (what each form does to the vault),
`activity` (the two audit trails as one timeline), `chart` (that timeline drawn as SVG
on the server) and `command` (starting it).
"""
