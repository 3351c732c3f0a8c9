"""Editor-independent plugin logic, shared by the Krita and GIMP adapters (stdlib only).

A plugin wraps its document in a ``Document`` and calls ``build_request`` (read, plan, sketch
guide, features, check: once for both editors), runs the request with a ``GenerationTask`` on a
worker thread, and turns each ``ResultImage`` into a layer named by ``layer_name`` at the offset
it carries.

The package splits that logic by responsibility; everything is importable from here.
"""

from __future__ import annotations

from ..connection import Client, ClientError, JobCancelled, JobFailed, ProgressInfo, Result
from ..protocol import GenerateRequest, Image
from .build import BACKGROUND, SELECTION_MODES, Document, RequestProblem, build_request, read_state, selection_mode_help
from .controls import LINE_KINDS, ControlLayer, control_items
from .controls import from_text as controls_from_text
from .controls import to_text as controls_to_text
from .core import (
    IMG2IMG,
    INPAINT,
    TXT2IMG,
    Box,
    EditorState,
    Growth,
    Params,
    PlannedRequest,
    bgra_to_rgba,
    choose_mode,
    crop_bytes,
    grown_canvas,
    layer_name,
    plan_request,
    read_plan,
    rgba_to_bgra,
    selection_bounds,
)
from .launcher import LaunchError, LocalServer, ServerManager, log_dir
from .live import (
    LIVE_LAYER_NAME,
    LIVE_MAX_STEPS,
    LIVE_STEPS,
    LiveConfig,
    LiveConnection,
    LiveSession,
    edit_models,
    find_model,
    fingerprint,
    frame_keys,
    is_edit_model,
    live_params,
    live_steps,
    params_key,
    plan_live,
)
from .power import (
    FeaturePlan,
    Features,
    add_lora,
    apply_features,
    feature_choices,
    features_from_ui,
    fetch_history,
    fetch_result,
    fit_attachments,
    fit_to_model,
    history_label,
    is_dark_on_light,
    loras_text,
    match_loras,
    model_features,
    params_from_history,
    parse_loras,
    plan_upscale,
    result_record,
    sketch_guide,
    upscaler_choices,
)
from .regions import RegionLayer, region_items
from .regions import from_text as regions_from_text
from .regions import to_text as regions_to_text
from .server_command import ServerSettings, local_port, probe, recorded_command
from .tasks import ClientTask, GenerationTask, generate_work
from .ui import (
    DEFAULT_SERVER_URL,
    TOKEN_ENV,
    URL_ENV,
    check_request,
    check_token,
    model_choices,
    params_from_settings,
    params_from_ui,
    params_to_settings,
    parse_seed,
    progress_text,
    remember_token,
    resolve_token,
    resolve_url,
    strength_text,
)

__all__ = ["BACKGROUND", "Box", "Client", "ClientError", "ClientTask", "ControlLayer", "LINE_KINDS", "control_items", "RegionLayer", "region_items", "regions_from_text", "regions_to_text", "controls_from_text", "controls_to_text", "DEFAULT_SERVER_URL", "Document", "EditorState", "FeaturePlan", "Features", "Growth", "GenerateRequest", "GenerationTask", "IMG2IMG", "INPAINT", "Image", "JobCancelled", "JobFailed", "LIVE_LAYER_NAME", "LIVE_MAX_STEPS", "LIVE_STEPS", "LaunchError", "LiveConfig", "LiveConnection", "LiveSession", "LocalServer", "Params", "PlannedRequest", "ProgressInfo", "RequestProblem", "Result", "SELECTION_MODES", "selection_mode_help", "ServerManager", "ServerSettings", "TOKEN_ENV", "TXT2IMG", "URL_ENV", "add_lora", "apply_features", "bgra_to_rgba", "build_request", "check_request", "check_token", "choose_mode", "crop_bytes", "edit_models", "feature_choices", "features_from_ui", "fetch_history", "fetch_result", "find_model", "fingerprint", "fit_attachments", "fit_to_model", "frame_keys", "generate_work", "grown_canvas", "history_label", "is_dark_on_light", "is_edit_model", "layer_name", "live_params", "live_steps", "local_port", "log_dir", "loras_text", "match_loras", "model_choices", "model_features", "params_from_history", "params_from_settings", "params_from_ui", "params_key", "params_to_settings", "parse_loras", "parse_seed", "plan_live", "plan_request", "plan_upscale", "probe", "progress_text", "read_plan", "read_state", "recorded_command", "remember_token", "resolve_token", "resolve_url", "result_record", "rgba_to_bgra", "selection_bounds", "sketch_guide", "strength_text", "upscaler_choices"]
