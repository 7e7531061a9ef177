"""Tools in the chat: MCP servers (the official `mcp` SDK's client), the tool loop, approvals.

`config` holds what the user set up (servers, limits, always-allowed tools), `connections` one
live server each, `stdio` how a local command is started (so that a failed start can say why),
`host` the servers and the approvals together (one per `App`), `calls` how vLLM's parsers find
calls in a reply and what goes back, `loop` one chat turn's rounds.
"""
