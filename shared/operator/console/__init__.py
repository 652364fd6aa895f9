"""The operator's console: server-rendered pages over the operator API, for people in a browser.

The console never decides who may act. Every page reads through the operator API's own handler
(`shared.operator.api.handle`) with the signed-in person's token, and every button posts to the same
handler; what a page offers comes from the API's `caller` answer (`may_approve`, `may_operate`), and the
API refuses whatever the person may not do. How the browser signs in, the pages and their security headers:
docs/console.md.
"""
from shared.operator.console.app import ConsoleRequest, ConsoleResponse
from shared.operator.console.routes import handle

__all__ = ["ConsoleRequest", "ConsoleResponse", "handle"]
