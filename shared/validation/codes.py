"""Every finding code the validator can emit: severity, meaning, what to do.

docs/validation.md carries the same table (a unit test keeps them in step). Severity "error" rejects
the dataset; "warning" is reported but accepted. Two families depend on the run's options: personal
data (`pii_*`, `--pii`) and over-long examples (`over_token_limit`, `--over-limit`).
"""

from __future__ import annotations

from dataclasses import dataclass

from .options import ValidationOptions


@dataclass(frozen=True)
class Code:
    code: str
    severity: str  # "error" | "warning" | "option:pii" | "option:over_limit"
    meaning: str
    action: str


_TABLE = (
    # --- file and encoding
    Code("empty_file", "error", "The file has no examples (no non-blank line).",
         "Upload the real dataset; one JSON object per line."),
    Code("not_jsonl", "error", "The file is not JSON Lines: CSV, TSV, compressed or binary (named in the "
         "message).", "Convert it as the message says: one JSON object per line, UTF-8, uncompressed."),
    Code("utf16_encoding", "error", "The file is UTF-16 or UTF-32, not UTF-8.",
         "Re-save as UTF-8 (with or without BOM)."),
    Code("invalid_utf8", "error", "The line is not valid UTF-8.",
         "Re-encode the source as UTF-8; the message gives the byte offset in the line."),
    Code("line_too_long", "error",
         "The line is larger than the validator's cap (32 MiB by default); it cannot be a valid example.",
         "Split it or reference images by URL instead of inline base64."),
    Code("blank_line", "warning", "A blank line between examples.", "Remove blank lines."),
    Code("invalid_json", "error", "The line is not valid JSON.", "Fix the JSON at the reported position."),
    Code("not_an_object", "error", "The line is JSON but not an object.",
         "Each line must be one JSON object (one example)."),
    Code("legacy_format", "error",
         "prompt/completion format: only for babbage-002/davinci-002, retired on Azure.",
         "Convert to chat format: messages with user and assistant turns."),
    Code("unknown_format", "error", "The object is neither chat, DPO nor reinforcement format.",
         "Use messages (supervised/reinforcement) or input + preferred_output + non_preferred_output."),
    Code("format_mismatch", "error", "The line's format differs from the file's (or from --method).",
         "Keep one fine-tuning method per file."),
    Code("file_too_large", "warning", "The file is over 512 MB, the single-request upload limit.",
         "Split it, or upload through the multipart uploads API."),
    # --- dataset level
    Code("unknown_model", "error", "The base model is not one ftops can fine-tune.",
         "Use one of the models listed in docs/validation.md."),
    Code("method_not_supported", "error", "The base model does not support this fine-tuning method.",
         "Choose a model that supports the method (see the model table)."),
    Code("method_not_on_hub_api", "error", "The hub API ftops is configured for (HUB_API_VERSION) lacks this method.",
         "Use HUB_API_VERSION=v1 (every method), or a method the configured version has."),
    Code("too_few_examples", "error", "Fewer than 10 examples in the training file.",
         "Provide at least 10 examples (50-100 well-made ones is the usual start)."),
    Code("job_too_large", "error", "Billed tokens (tokens x epochs) exceed the 2 billion per-job limit.",
         "Use fewer examples, shorter examples or fewer epochs."),
    Code("missing_validation_file", "warning",
         "Reinforcement fine-tuning needs a validation file and none was given.",
         "Add validation.jsonl (or let intake split one off)."),
    # --- raised by the intake stage (shared/stages/intake.py) in the same report
    Code("invalid_settings", "error", "run.json (or a train command's settings) is invalid.",
         "Fix the setting named in the message."),
    Code("not_a_dataset", "error", "The dropped blob is not a .jsonl file.",
         "Drop a JSONL dataset, or a folder with train.jsonl and run.json."),
    Code("missing_file", "error", "A run folder's train.jsonl did not arrive in time after run.json.",
         "Upload train.jsonl (and the other files) before run.json."),
    Code("run_json_too_large", "error", "run.json is larger than settings ever need (64 KiB); it was not read.",
         "Keep run.json to the settings it documents."),
    Code("dataset_too_large", "error", "The drop's data is larger than intake validates (MAX_DATASET_MB), or a "
         "file larger than the configured hub API can take; nothing of it was read.",
         "Split the data into smaller runs, or use a hub API with the uploads API."),
    Code("validation_timeout", "error", "Validating the drop took longer than VALIDATION_MAX_SECONDS.",
         "Split the data into smaller runs, or fix what makes its lines slow to check (e.g. millions of "
         "empty objects)."),
    Code("dataset_replaced", "error", "A file of the drop was replaced while it was validated.",
         "Upload run.json again to start a run from the new files."),
    Code("too_few_to_split", "error", "After holding out evaluation (and validation) data, fewer than 10 "
         "examples are left to train on, or none to evaluate.", "Add examples, or give eval.jsonl in a run folder."),
    # --- chat structure
    Code("missing_messages", "error", "messages is missing, not a list, or empty.",
         "Give messages as a non-empty list of {role, content} objects."),
    Code("invalid_message", "error", "A message is not an object or has an invalid field.",
         "Each message is an object with a role and content (or tool_calls)."),
    Code("invalid_role", "error", "Unknown role.", "Use system, user, assistant, tool or function."),
    Code("invalid_content", "error", "content is not a string, null or a list of valid parts.",
         "Use a string, or parts of type text / image_url."),
    Code("invalid_image", "error", "An image part has no usable url or an invalid detail.",
         "image_url.url must be https or data:image/(jpeg|png|webp);base64; detail low, high or auto."),
    Code("image_in_assistant", "error", "Images are not allowed in assistant messages.",
         "Move images into user messages."),
    Code("images_not_supported", "error", "The base model does not accept images in training data.",
         "Use gpt-4o or gpt-4.1 for vision fine-tuning, or remove the images."),
    Code("too_many_images", "error", "More than 64 images in one example.", "Split the example."),
    Code("invalid_weight", "error", "weight is not 0 or 1, or is on a non-assistant message.",
         "Only assistant messages take weight, and only 0 or 1."),
    Code("no_assistant_message", "error", "The example has no assistant message to learn from.",
         "Add the assistant answer."),
    Code("empty_assistant_message", "error", "An assistant message has neither content nor tool calls.",
         "Give the answer text, or tool_calls."),
    Code("consecutive_assistant", "error",
         "Two assistant messages in a row without a tool reply (the service fails it: invalid schema).",
         "Merge them, or put the tool reply between them."),
    Code("invalid_tools", "error", "tools (or functions) is malformed.",
         "tools = [{type: function, function: {name, description?, parameters?}}]."),
    Code("invalid_tool_calls", "error", "tool_calls or function_call is malformed.",
         "tool_calls = [{id, type: function, function: {name, arguments: <JSON string>}}]."),
    Code("orphan_tool_message", "error", "A tool message does not answer an earlier tool_call_id.",
         "Give each tool message the id of a tool call made before it."),
    Code("special_token", "error", "A special token such as <|endoftext|> appears in the text.",
         "Remove special tokens from the data."),
    Code("lone_surrogate", "error", "A string holds a lone UTF-16 surrogate escape: not valid Unicode.",
         "Fix the exporter; \\ud800-\\udfff must come in valid pairs."),
    Code("over_token_limit", "option:over_limit",
         "The example is longer than the model's per-example limit; the service truncates its end.",
         "Shorten the example (the answer is usually what gets cut)."),
    # --- DPO and reinforcement
    Code("invalid_dpo_input", "error", "input.messages is missing or invalid.",
         "DPO: input = {messages: [...], tools?, parallel_tool_calls?}."),
    Code("invalid_dpo_output", "error",
         "preferred_output / non_preferred_output is not a list of assistant (or tool) messages.",
         "Give each output as a list with at least one assistant message."),
    Code("rft_last_message_not_user", "error", "Reinforcement: the last message is not from the user.",
         "End messages with the user turn the model answers."),
    Code("rft_missing_reference", "error",
         "Reinforcement: no extra field (e.g. a reference answer) for the grader.",
         "Add the field your grader reads as {{item.<field>}}."),
    Code("rft_system_message", "error", "Reinforcement on Azure does not support system messages.",
         "Fold the instructions into the user message."),
    # --- privacy
    Code("pii_email", "option:pii", "An email address.", "Remove or pseudonymize it."),
    Code("pii_phone", "option:pii", "A phone number.", "Remove or pseudonymize it."),
    Code("pii_card", "option:pii", "A payment card number (passes the Luhn check).", "Remove it."),
    Code("pii_national_id", "option:pii", "A national id (US SSN).", "Remove it."),
    Code("pii_iban", "option:pii", "An IBAN (passes the mod-97 check).", "Remove it."),
    Code("secret", "error",
         "A credential: cloud key, connection string, private key block or token.",
         "Remove it from the data and rotate the credential."),
    # --- quality
    Code("duplicate_example", "warning", "The same example appears earlier in the file.",
         "Drop duplicates: they overweight an example."),
    Code("duplicate_check_partial", "warning",
         "The file has more distinct lines than the duplicate index holds (8 million): lines past that were not "
         "compared.", "Split the file, or remove the lines that are not examples."),
    Code("leakage", "warning",
         "The example also appears in another file of the run (train vs validation/eval).",
         "Remove it from the held-out file so scores mean something."),
    Code("short_assistant_answer", "warning", "An assistant answer is empty or a single word.",
         "Check it is intended (classification labels are fine)."),
    Code("no_prompt_message", "warning", "The example has no system or user message.",
         "Add the prompt the answer responds to."),
)

CODES: dict[str, Code] = {c.code: c for c in _TABLE}


def severity(code: str, options: ValidationOptions) -> str:
    """'error' or 'warning' for a code under the run's options."""
    sev = CODES[code].severity
    if sev == "option:pii":
        return options.pii
    if sev == "option:over_limit":
        return options.over_limit
    return sev
