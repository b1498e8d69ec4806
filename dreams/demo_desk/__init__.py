"""The demo's second agent: Northwind's IT access desk, a multi-turn desk with its own sandbox.

`directory` is the access directory's logic (employees, group policies, grants, the final
check), shared by the sandbox MCP server (`sandbox`, started by `make demo` and the tests on
loopback) and by the generator of the desk's recorded runs (`runs`); `seed` creates the agent,
its runs and a hand-written proposal whose replay runs in the sandbox with a simulated user.
"""
