"""The tool declarations of `tools.py` as the MCP SDK's tools: each `ToolSpec` becomes a function whose signature is
the spec's parameters (the SDK builds the input schema from it) and whose body hands the call to the pipeline of the
server it runs in. server.py registers the result; nothing here knows a tool by name."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.tools import Tool
from mcp.server.mcpserver.utilities.func_metadata import FuncMetadata
from mcp.types import CallToolResult, ToolAnnotations

from ai_credit_usage.answers.results import error_result
from ai_credit_usage.answers.views import apps_extension
from ai_credit_usage.pipeline import Pipeline
from ai_credit_usage.runtime.settings import Settings
from ai_credit_usage.runtime.tool_call import current_call
from ai_credit_usage.tools import TOOLS, ToolSpec

VERSION = "0.1.0"
READ_ONLY = ToolAnnotations(read_only_hint=True, idempotent_hint=True, open_world_hint=False)


class CreditsServer(MCPServer):
    """The MCP server of one app, and the pipeline its tools answer through (they are shared by every app)."""

    def __init__(self, pipeline: Pipeline, *, instructions: str, tools: list[Tool]) -> None:
        super().__init__(
            "ai-credits-mcp", version=VERSION, instructions=instructions, tools=tools, extensions=[apps_extension()]
        )
        self.pipeline = pipeline


_built: dict[str, tuple[ToolSpec, Tool]] = {}


def offered_tools(settings: Settings) -> list[Tool]:
    """The SDK's tools for every spec these settings offer (`ToolSpec.offered`), in TOOLS order."""
    return [_registered(spec) for spec in TOOLS if spec.offered(settings)]


def _registered(spec: ToolSpec) -> Tool:
    """The SDK's tool for `spec`, built once per process: its argument model and schemas take ~10 ms to build, and
    tests and benchmarks build many apps. Its function finds the app's pipeline through the server it runs in."""
    built = _built.get(spec.name)
    if built is None or built[0] is not spec:
        tool = Tool.from_function(
            _tool_function(spec),
            name=spec.name,
            title=spec.title,
            description=spec.description,
            annotations=READ_ONLY,
            # MCP Apps: the one addition to the tool's definition; hosts without Apps ignore it and show the text.
            meta={"ui": {"resourceUri": spec.view.uri}} if spec.view is not None else None,
        )
        metadata = tool.fn_metadata
        tool.fn_metadata = TextKeptMetadata(
            arg_model=metadata.arg_model,
            output_schema=metadata.output_schema,
            output_model=metadata.output_model,
            wrap_output=metadata.wrap_output,
            text_names=frozenset(name for name, annotation in spec.all_parameters if _is_text(annotation)),
        )
        _built[spec.name] = built = (spec, tool)
    return built[1]


class TextKeptMetadata(FuncMetadata):
    """The SDK's argument handling, except that a text parameter keeps its text: the SDK parses a string that looks
    like JSON into an object for any parameter not typed exactly `str` (ours are `str | None`), so a user named
    '{"$ne": ""}' would arrive as an operator object and `"null"` as no filter at all. Filters are data."""

    text_names: frozenset[str] = frozenset()

    def pre_parse_json(self, data: dict[str, Any]) -> dict[str, Any]:
        parsed = super().pre_parse_json(data)
        return {key: data[key] if key in self.text_names else value for key, value in parsed.items()}


def _is_text(annotation: Any) -> bool:
    """`str | None`, possibly Annotated: a parameter whose value is text, never parsed as JSON."""
    inner = getattr(annotation, "__origin__", annotation) if getattr(annotation, "__metadata__", None) else annotation
    return set(getattr(inner, "__args__", ())) == {str, type(None)}


def _tool_function(spec: ToolSpec) -> Callable[..., Awaitable[CallToolResult]]:
    """The function the SDK registers for `spec`: its signature is the spec's parameters (the SDK builds the input
    schema from it) and its return annotation names the output schema. Markdown first (TAIS reads text), and the
    structured result that the output schema describes."""

    async def tool(ctx: Context, **arguments: Any) -> CallToolResult:
        call, server = current_call.get(), ctx.mcp_server
        if call is None or call.caller is None or not isinstance(server, CreditsServer):
            # The gate always sets the caller; refuse rather than guess if it ever does not.
            return error_result("The caller could not be identified, so no usage can be shown.")
        return await server.pipeline.answer(spec, call.caller, arguments, progress=ctx.report_progress)

    parameters = [inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=Context)]
    parameters += [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation)
        for name, annotation in spec.all_parameters
    ]
    returns = Annotated[CallToolResult, spec.result]
    tool.__signature__ = inspect.Signature(parameters, return_annotation=returns)  # type: ignore[attr-defined]
    tool.__annotations__ = {"ctx": Context, **dict(spec.all_parameters), "return": returns}
    tool.__name__ = tool.__qualname__ = spec.name
    return tool
