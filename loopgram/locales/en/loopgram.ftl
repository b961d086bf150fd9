## Greeting and help
start-greeting = Hi, { $name }! 👋 I'm an assistant that learns from your ratings.
    Just write me a message. Rate every answer with 👍 or 👎 — or press 🔄 for another version.
    /assistant picks what I do: chat, paraphrase, summarize, moderate or label. /help tells more.
help-text = <b>How it works</b>
    • Write a message (or send a .txt/.md file) — I answer with the current assistant.
    • 👍 / 👎 under an answer rate it; after 👎 tell me what was wrong.
    • 🔄 gives another version; rating one of the two tells me which is better.
    • Your ratings train the next version of the model.

    <b>Commands</b>
    /assistant — choose the assistant
    /chat, /paraphrase, /summarize, /moderate, /label — switch directly
    /reset — forget this chat's conversation
    /help — this message

    In groups I answer only when mentioned or replied to.
reset-done = 🧹 Done: I forgot our conversation. The next message starts a new one.
command-start = Start
command-help = How to use the bot
command-assistant = Choose an assistant
command-reset = Forget the conversation

## Assistants
assistant-pick = Which assistant should answer in this chat?
assistant-switched = Assistant: { $title }
assistant-chat-title = Chat
assistant-chat-description = General questions and conversation.
assistant-chat-system = You are a helpful, honest assistant in a Telegram chat. Answer the user's last message clearly and concisely, in English unless the user writes in another language. Use short paragraphs or lists. If you do not know something, say so instead of inventing it.
assistant-paraphrase-title = Paraphrase
assistant-paraphrase-description = Send a text and I'll rewrite it keeping its meaning.
assistant-paraphrase-system = You rewrite texts. Rewrite the user's text so that it keeps its full meaning but uses different wording. Keep the language of the original. Do not add facts, comments or explanations; output only the rewritten text.
assistant-summarize-title = Summarize
assistant-summarize-description = Send a text or a .txt/.md file and I'll summarize it.
assistant-summarize-system = You write summaries. Summarize the user's text in a few sentences, keeping the key facts, names and numbers. Write in the language of the text. Do not add anything that is not in the text.
assistant-moderate-title = Moderate
assistant-moderate-description = Send a text and I'll say whether it breaks common rules (spam, abuse, threats, adult content).
assistant-moderate-system = You are a content moderator. Decide whether the user's text is ok, spam, abuse, a threat, adult content or other harmful content. Answer with the label first, then one short sentence explaining why.
assistant-label-title = Label
assistant-label-description = Send an item and I'll classify it.
assistant-label-system = You classify items. Give the most fitting short category label for the user's text, then one short sentence explaining the choice.

## Feedback
feedback-thanks = Thanks! 👍
feedback-why = Sorry about that. What was wrong?
feedback-reason-saved = Noted, thank you.
feedback-ask-comment = If you like, describe in one message what the answer should have been — or send /skip.
feedback-comment-saved = Thanks, your comment is saved. It helps the next version.
feedback-comment-skipped = OK, no comment.
feedback-comment-too-long = That comment is too long (max { $limit } characters). Please shorten it.
feedback-unknown = This answer is no longer available.
feedback-not-yours = Only the person who asked can rate this answer.
callback-invalid = This button is not valid any more.
regenerating = Writing another version…
reason-wrong = ❌ Wrong
reason-unhelpful = 🤷 Unhelpful
reason-unsafe = ⚠️ Unsafe
reason-style = ✍️ Style
reason-other = 💬 Other
button-retry = 🔁 Try again

## Input problems
empty-message = Your message is empty — write me some text.
unknown-command = I don't know that command. /help lists what I can do.
only-text = I only understand text and text files (.txt, .md) for now.
file-unsupported = I can't read this file type yet. Send text or a .txt/.md file.
file-too-big = This file is too big (max { $limit_kb } KB).
file-not-utf8 = I couldn't read this file: it is not UTF-8 text.
file-empty = This file is empty.

## Errors
error-generic = Something went wrong on my side. Please try again.
error-model-unavailable = 😔 Sorry, the model is not available right now. Your message is saved — press "Try again" in a moment.
error-model-slow = 😔 Sorry, the model is taking too long to answer. Your message is saved — press "Try again".
error-model-empty = 😔 Sorry, the model returned an empty answer. Press "Try again".
error-input-too-long = Your message is too long ({ $length } characters; the limit is { $limit }). Please shorten it or split it.
error-not-allowed = You are not allowed to do that.
error-not-found = Not found.
error-no-token = TELEGRAM_BOT_TOKEN is not set.
error-no-webhook-url = WEBHOOK_URL is required in webhook mode.

## Training reports and admin commands
report-run = 🧪 Training run #{ $run } — { $assistant } ({ $method })
    Result: { $status } · adapter { $adapter }
    Examples: { $train } train, { $held_out } held out · { $seconds } s
    Held-out preference accuracy { $accuracy } (vs { $active_accuracy } for { $against }), reward margin { $margin } (vs { $active_margin })
    { $reason }
report-status-succeeded = ✅ deployed as canary
report-status-rejected = ❌ rejected at the gate
report-status-refused = ⏸ not started
report-status-failed = 💥 failed
report-status-running = ⏳ running
report-status-queued = ⏳ queued
admin-only = This command is for admins.
adapters-none = No adapters yet. They appear after the first training run.
adapters-line = { $name } — { $status }
adapters-usage-deploy = Usage: /deploy <adapter name>, e.g. /deploy chat-v3
adapters-usage-rollback = Usage: /rollback <assistant>, e.g. /rollback chat
adapters-usage-train = Usage: /train <assistant> [dpo|kto]
adapters-deployed = { $name } is now { $status }.
adapters-rolled-back = { $assistant } now serves { $current }.
adapters-base-model = the base model
train-queued = Training of { $assistant } ({ $method }) is queued. You will get a report.
error-adapter-server = The model server refused or is unreachable: { $detail }
error-adapter-state = Not possible right now: { $detail }
error-adapter-unknown = No such adapter: { $detail }. /adapters lists them.
