## Greeting and help
start-greeting = Hi, { $name }! 👋 I'm an assistant that learns from your ratings.
    Just write me a message. Rate every answer with 👍 or 👎 — or press 🔄 for another version.
    /assistant picks what I do: chat, paraphrase, summarize, moderate or label. /help tells more.
help-text = <b>How it works</b>
    • Write a message or send a file (txt, md, pdf, docx) — I answer with the current assistant.
    • 👍 / 👎 under an answer rate it; after 👎 tell me what was wrong.
    • 🔄 gives another version; rating one of the two tells me which is better.
    • Your ratings train the next version of the model.

    <b>Commands</b>
    /assistant — choose the assistant
    /chat, /paraphrase, /summarize, /moderate, /label — switch directly
    /labels — the labels the labeling assistant uses (admins: /labels a, b, c)
    Buttons under paraphrases and summaries change the style, format or language.
    /reset — forget this chat's conversation
    /export_me — all your data as a file; /forget — delete it
    /report — reply to one of my answers to send it to the moderators
    /help — this message

    In groups I answer only when mentioned or replied to.
reset-done = 🧹 Done: I forgot our conversation. The next message starts a new one.
command-start = Start
command-help = How to use the bot
command-assistant = Choose an assistant
command-reset = Forget the conversation
command-report = Send an answer to the moderators
command-paraphrase = Rewrite a text
command-summarize = Summarize a text or a file
command-moderate = Check a text against the rules
command-label = Label an item or a CSV/XLSX file
command-labels = The labels in use

## Assistants
assistant-pick = Which assistant should answer in this chat?
assistant-switched = Assistant: { $title }
assistant-chat-title = Chat
assistant-chat-description = General questions and conversation.
assistant-paraphrase-title = Paraphrase
assistant-paraphrase-description = Send a text and I'll rewrite it keeping its meaning.
assistant-summarize-title = Summarize
assistant-summarize-description = Send a text or a file (txt, md, pdf, docx) and I'll summarize it, even a very long one.
assistant-moderate-title = Moderate
assistant-moderate-description = Send a text and I'll say whether it breaks common rules (spam, abuse, threats, adult content).
assistant-label-title = Label
assistant-label-description = Send an item and I'll label it with this chat's label set (/labels), or send a CSV/XLSX file to label every row.

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
only-text = I only understand text and files (txt, md, pdf, docx, html, csv) for now.
file-unsupported = I can't read this file type. Send text, or a txt, md, pdf, docx, html or csv file.
file-too-big = This file is too big (max { $limit_kb } KB).
file-not-utf8 = I couldn't recognise this file's encoding; save it as UTF-8 and send it again.
file-empty = This file is empty.

## Errors
error-generic = Something went wrong on my side. Please try again.
error-model-unavailable = 😔 Sorry, the model is not available right now. Your message is saved — press "Try again" in a moment.
error-model-slow = 😔 Sorry, the model is taking too long to answer. Your message is saved — press "Try again".
error-model-empty = 😔 Sorry, the model returned an empty answer. Press "Try again".
answer-withheld = 🙅 I can't share my instructions or anything outside this conversation. Ask me something else.
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
report-gate-pairs = Held-out pairs, one by one: better than { $against } on { $better }, worse on { $worse } (sign test p = { $p }; rejected below { $alpha })
report-judge = LLM judge: candidate win rate { $win_rate } on { $prompts } held-out prompts ({ $ties } ties)
report-judge-decisive = LLM judge: candidate win rate { $win_rate } on { $prompts } held-out prompts: won { $wins }, lost { $losses }, { $ties } ties (sign test p = { $p })
report-judge-none = LLM judge: — ({ $note })
report-task = Task check, { $metric } on { $items } evaluation items: candidate { $candidate }, the model it would replace { $active }; right on { $better } items the other got wrong, wrong on { $worse } it got right (sign test p = { $p })
report-task-length = The task check counts a rewrite up to { $bound }× its source's length as ok
report-task-none = Task check: — ({ $note })
report-reward-model = Reward model { $name }: mean score { $candidate } (candidate) vs { $active } (active), candidate win rate { $win_rate } on { $prompts } prompts
report-reward-model-none = Reward model: — ({ $note })
report-agreement = Judge and reward model agree on { $agreed } of { $compared } prompts ({ $agreement }; { $undecided } left undecided by one of them)
report-agreement-none = Judge and reward model: — ({ $note })
report-disagreement = ≠ “{ $prompt }”: the judge prefers { $judge }, the reward model { $reward_model }
report-side-candidate = the candidate
report-side-active = the active answer
admin-only = This command is for admins.
adapters-none = No adapters yet. They appear after the first training run.
adapters-line = { $name } — { $status }
adapters-usage-deploy = Usage: /deploy <adapter name>, e.g. /deploy chat-v3
adapters-usage-rollback = Usage: /rollback <assistant>, e.g. /rollback chat
adapters-usage-train = Usage: /train <assistant> [dpo|orpo|kto]
adapters-deployed = { $name } is now { $status }.
adapters-rolled-back = { $assistant } now serves { $current }.
adapters-base-model = the base model
train-queued = Training of { $assistant } ({ $method }) is queued. You will get a report.
error-adapter-server = The model server refused or is unreachable: { $detail }
error-adapter-already = { $name } is already { $status ->
    [active] active
   *[canary] the canary
}.
error-adapter-no-canary = { $assistant } has no canary to promote.
error-adapter-nothing-to-roll-back = { $assistant } serves the base model: nothing to roll back.
error-adapter-not-reward-model = { $name } is not a reward model.
error-adapter-unknown = No such adapter: { $name }. /adapters lists them.

## Assistants: options, structured answers, per-chat settings
assistant-disabled = { $title } is turned off in this chat.
assistant-disabled-now = { $title } is now off in this chat.
assistant-enabled = { $title } is now on in this chat.
assistants-usage = Usage: /enable <assistant> or /disable <assistant>. In this chat: { $states }
chat-admin-only = Only the bot's admins and this group's administrators can change that.
state-on = on
state-off = off
option-style-neutral = Neutral
option-style-formal = Formal
option-style-friendly = Friendly
option-style-concise = Concise
option-style-simpler = Simpler
option-target-same = Same language
option-target-en = → English
option-target-ru = → Русский
option-format-short = Short
option-format-line = One line
option-format-bullets = Bullets
option-format-detailed = Detailed
option-format-facts = Key facts
button-meaning-check = 🔍 Meaning
meaning-kept = ✅ Meaning kept (similarity { $similarity }).
meaning-partly = ⚠️ Meaning partly kept (similarity { $similarity }): compare with the original.
meaning-changed = ❌ The meaning changed (similarity { $similarity }).
meaning-copy = ⚠️ This is almost a copy of the original.
meaning-missing-numbers = Numbers missing from the rewrite: { $numbers }
summary-progress = 📖 Reading a long text: part { $done } of { $total }…
best-of-n-progress = ✍️ Writing { $n } versions of the answer and picking the best…
error-structured-output = 😔 The model's answer could not be read, even after a second try. Press "Try again".
moderation-verdict = { $icon } { $label } — confidence { $confidence }
    Reason: { $reason }
    Suggested action: { $action }
moderation-label-ok = OK
moderation-label-spam = Spam
moderation-label-abuse = Abuse
moderation-label-threat = Threat
moderation-label-adult = Adult content
moderation-label-other = Other harmful content
moderation-action-none = none
moderation-action-warn = warn
moderation-action-delete = delete
moderation-action-review = send to moderators
moderation-status = 🛡 Moderation of every message: { $state }. Automatic action: { $action } at confidence ≥ { $threshold }; harmful or unsure messages go to the moderators.
moderation-usage = Usage: /moderation on|off, /moderation action none|warn|delete, /moderation threshold 0.5–1.0
moderation-groups-only = Moderation of every message works in groups. Here, switch to /moderate and send a text.
moderation-warning = ⚠️ This message may break the chat rules ({ $label }). Moderators will take a look.
moderation-deleted = 🗑 A message was removed: { $label }.
label-result = 🏷 { $label } — confidence { $confidence }
labels-current = Label set “{ $name }”:
labels-saved = ✅ Saved. New items are labeled with this set.
labels-invalid = This label set is not valid: { $detail }. Give 2–{ $max } unique labels, e.g. /labels question, complaint, praise
labels-invalid-yaml = This YAML file is not a label set. Expected: a "labels:" list of names, or of name + description.
labels-problem-too-few = give at least { $min } labels
labels-problem-too-many = give at most { $max } labels
labels-problem-unknown-field = unknown field “{ $field }”
labels-problem-missing = “{ $field }” is missing
labels-problem-too-long = “{ $field }” is too long (at most { $max_length } characters)
labels-problem-empty = “{ $field }” is empty
labels-problem-not-list = “{ $field }” must be a list
labels-problem-bad-name = a label is 1-32 letters, digits, spaces, '-' or '_'
labels-problem-duplicate = label names must be unique
labels-problem-other = { $message }
labels-problem-in-label = label { $number }: { $problem }
labels-problem-in-named-label = label { $number } “{ $value }”: { $problem }
labels-problem-in-set-name = the set's name: { $problem }
labels-file-yaml = Send the label set as a .yaml file with /labels as its caption.
file-broken = I couldn't open this file: it looks damaged.
file-encrypted = This file is password-protected; I can't read it.
file-no-text = I found no text in this file (a scan? I can't read images).
label-file-progress = 🏷 Labeling the table: { $done } of { $total } rows…
label-file-done = ✅ Labeled { $rows } rows: { $labeled } labeled, { $review } marked for review (low confidence), { $invalid } without a valid label. The result is below.
label-file-queued = 👀 { $count } of them went to the moderators' review queue: their answers teach the labeling assistant.
label-file-queued-first = 👀 The first { $count } of the { $total } rows to check went to the moderators' review queue: their answers teach the labeling assistant.
label-file-queued-before = 👀 The rows to check are already in the moderators' review queue from an earlier run of this table.
label-file-review-failed = ⚠️ I couldn't put the rows to check in the review queue just now; the file below marks them (needs_review).
label-file-no-rows = This table has no rows to label: I need a header row and at least one row under it.
label-file-no-column = There is no column “{ $column }” in this table. Columns: { $columns }.
label-file-broken = I couldn't read this table: the file looks damaged. Send a .csv or .xlsx file.
label-file-too-many-rows = This table has more than { $limit } rows. Split it into parts of up to { $limit } rows.
label-batch-stopped = 😔 The model stopped answering after { $done } of { $total } rows. The labeled rows are saved; send the same file again later and I'll continue from there.
label-resume-mismatch = { $out } belongs to a run on another file or with other options. Use --restart to start over, or choose another --out.
label-resume-broken = { $out } was changed after the run stopped, so I can't continue it. Use --restart to start over.
label-out-exists = { $out } already exists. Use --restart to overwrite it, or choose another --out.
label-model-down = The model server at { $url } is not answering. Start it with `loopgram serve-model` or set LLM_BASE_URL. { $done } of { $total } rows are saved in { $out }.

## Human review
review-card-title = 🔎 Review #{ $id } · { $assistant } · { $reason }
review-reason-thumbs_down = 👎 from the user
review-reason-moderation = 🛡 moderation verdict
review-reason-low_confidence = 🏷 unsure label
review-reason-report = 🚩 reported
review-card-gone = The answer was deleted; this item is closed.
review-card-prompt = ❓ Asked: { $text }
review-card-answer = 💬 Answer: { $text }
review-card-no-answer = (no answer: the model failed)
review-card-user = 🗣 User's reason: { $reason } · comment: { $comment }
review-card-note = 📝 { $note }
review-card-adapter = 🧩 Adapter: { $adapter }
review-card-labels = 🏷 Labels: { $labels }
review-card-decided = ☑️ { $status } by { $by }
review-card-correction = ✏️ Correction: { $text }
review-status-pending = pending
review-status-approved = Approved
review-status-rejected = Rejected
review-status-corrected = Corrected
review-status-withdrawn = Withdrawn
review-status-closed = Closed
review-button-approve = ✅ Approve
review-button-reject = ❌ Reject
review-button-correct = ✏️ Correct
review-button-skip = ⏭ Skip
review-done = Decided. Thank you!
review-recorded = Recorded. Another moderator decides this item too.
review-duplicate = You have already decided this item.
review-taken = Another moderator is working on this item.
review-closed = This item is already decided.
review-gone = This item no longer exists: its answer was deleted.
review-not-moderator = Only moderators can review answers.
review-skipped = Skipped.
review-correct-ask = Send the correct answer as your next message.
review-correct-prompt = ✏️ { $name }, send the correct answer for #{ $id } as your next message (or /cancel).
review-correct-labels = Write one of the labels, optionally with a reason: “label: reason”.
review-correct-cancelled = Correction cancelled; the item is back in the queue.
review-correction-invalid = That is not one of the labels: { $labels }. Write “label” or “label: reason”.
review-correction-length = The correction must be 1–{ $limit } characters. Send it again.
review-corrected-for-user = ✏️ A moderator corrected this answer:
    { $text }
review-empty = 🎉 The review queue is empty.
review-report-usage = Reply to one of my answers with /report (and optionally why) to send it to the moderators.
review-reported = 🚩 Thank you: the moderators will look at this answer.
role-usage = Usage: /grant <user id or @username> moderator|admin, /revoke <user>, /ban <user>, /unban <user> — or reply to the person's message.
role-unknown-user = I don't know { $ref }: they have to write to me first.
role-set = { $user } is now { $role }.
user-banned = { $user } is banned: I will not answer them.
user-unbanned = { $user } is no longer banned.
stats-queue = 📋 Review queue: { $pending } pending ({ $claimed } being worked on), oldest { $oldest }. Decided in 7 days: { $decided }; time to review median { $median }, p90 { $p90 }.
stats-moderator = 👤 { $id }: ✅ { $approve } ❌ { $reject } ✏️ { $correct } · agreement κ { $kappa }
stats-chart-title = 👍 rate per assistant and adapter, last 30 days
duration-minutes = { $n } min
duration-hours = { $n } h
stats-chart-plot-title = Share of thumbs up per assistant and adapter, last 30 days
stats-satisfaction-none = 😊 Satisfaction estimate: no assistant has a reward model yet (`loopgram train --method reward` trains one).
stats-satisfaction-title = 😊 Satisfaction estimate, { $assistant } (reward model { $model }), calibrated on { $rated } ratings: Brier { $brier }, calibration error { $ece }
stats-satisfaction-uncalibrated = 😊 Satisfaction estimate, { $assistant } (reward model { $model }): not enough ratings to calibrate ({ $rated } rated, needs { $needed } with both 👍 and 👎).
stats-satisfaction-unscored = 😊 Satisfaction estimate, { $assistant } (reward model { $model }): no answers scored yet; they are scored every { $minutes } min.
stats-satisfaction-adapter = • { $adapter }: predicted 👍 rate { $predicted } ({ $answers } answers) · observed { $observed } ({ $rated } rated)
stats-satisfaction-adapter-uncalibrated = • { $adapter }: { $answers } answers scored · observed 👍 rate { $observed } ({ $rated } rated)
stats-satisfaction-more = • … and { $n } older adapters (`loopgram satisfaction` lists them all)
stats-calibration-title = 🎯 Calibration of the satisfaction estimate: predicted 👍 probability against the observed share, with the ratings per bin
stats-calibration-plot-title = Calibration of the predicted thumbs-up probability
stats-calibration-x = predicted probability of thumbs up (out of sample)
stats-calibration-y = observed share of thumbs up
stats-calibration-count = ratings
stats-calibration-perfect = perfect calibration
review-card-closed-gone = 🔒 Closed: the answer under review was deleted (for example, its author used /forget).

## Knowledge base
kb-unavailable = The knowledge base is not reachable right now. Please try again later.
kb-unavailable-note = ⚠️ The knowledge base is not reachable right now: this answer has no sources.
kb-sources-title = 📚 Sources:
kb-sources-gone = The sources of this answer have been removed from the knowledge base.
kb-nothing = Nothing relevant found.
kb-deleted = Document { $id } removed from the knowledge base.
kb-no-document = There is no document { $id }.
kb-line = #{ $id } { $name } — { $chunks } chunks, { $status }, { $scope }
kb-scope-chat = this chat
kb-scope-all = all chats
kb-empty = The knowledge base is empty. Send a file with the caption /kb to add it.
kb-usage = Usage: /kb (list), /kb search <question>, /kb delete <id>; send a file with the caption /kb to add it.
kb-indexing = 📥 Indexing { $name }…
kb-added = ✅ Added { $name }: { $chunks } chunks.
kb-replaced = ✅ Updated { $name }: { $chunks } chunks (the old version is replaced).
kb-skipped = { $name } has not changed; nothing to do.
kb-injection-warning = ⚠️ { $count } passage(s) look like instructions to the model (prompt injection). They are indexed as plain data and will not be obeyed; check the document.
review-card-sources = 📚 Sources: { $sources }

## limits
limits-user-throttled = ⏳ You are asking faster than I can answer. Please wait about { $seconds } s and ask again — I will be glad to help.
limits-queue-position = ⏳ Many people are asking right now. You are #{ $position } in line; your answer will appear here.

## privacy
command-export_me = Get all my data as a file
command-forget = Delete all my data
privacy-private-only = Please use this command in a private chat with me: your data is only shown and handled there.
forget-confirm = 🗑 Delete everything I store about you? Your questions and my answers, your ratings and comments, and the feedback built from them will be deleted in all chats. Pairs a training run has already used stay, anonymised (nothing in them points to you). This cannot be undone.
forget-button-yes = 🗑 Yes, delete
forget-button-no = ✖️ No, keep
forget-cancelled = OK, nothing was deleted.
forget-done = ✅ Done: deleted { $interactions } answers and { $ratings } ratings. { $kept } training pairs already used for training are kept, anonymised. If you write again, I start from scratch.
forget-not-yours = This button is not yours, or not valid: nothing was deleted.
forget-expired = This confirmation has expired; nothing was deleted. Send /forget again.
export-caption = 📦 Your data: { $interactions } answers, { $ratings } ratings, { $comments } comments (JSON).
export-compressed = The file is gzip-compressed to fit Telegram's limit.
export-too-big = Your export is { $size } MB, over Telegram's { $limit } MB limit for files, even compressed. Please ask the bot's administrator for it.

## playground
playground-starting = Starting the playground: database, worker, model server and the bot (the first start prepares the model, about half a minute)…
playground-ready = 🧪 Playground ready: open { $url } in a browser.
playground-local-only = Serving on { $host } only: just this computer can open the page. Use --host 0.0.0.0 to share it on your network.
playground-exposed = ⚠️ Serving on { $host }: anyone who can reach this machine can open the page and act as any of its people, admin included (there is no login).
playground-stop = Press Ctrl+C to stop.
playground-stopped = Playground stopped; its data stays in { $dir } (--reset starts afresh).
playground-bad-lang = Unknown language “{ $code }”: use ru or en.
playground-cannot-listen = Cannot serve the playground on { $host }:{ $port } ({ $error }): pick another --port (0 = any free port).

## operations
backup-done = Backup written to { $path }: { $rows } rows in { $tables } tables and { $points } knowledge-base points (database revision { $revision }, { $size } KB).
backup-exists = { $path } already exists: pick another path, or pass --force to overwrite it.
backup-no-folder = The folder { $path } does not exist: create it first.
backup-unmigrated = The database has no schema yet, so there is nothing to back up (run `loopgram db upgrade` first).
backup-not-found = There is no backup at { $path }.
backup-broken = { $path } is not a complete loopgram backup ({ $detail }). Nothing was changed.
backup-kb-unavailable = The knowledge base cannot be opened ({ $detail }): stop the process that holds its local folder (the bot) or check QDRANT_URL. Nothing was changed.
backup-failed = Backup or restore failed: { $detail }. Nothing was changed.
backup-progress = { $what }: { $count }
restore-done = Restored { $path }: { $rows } rows in { $tables } tables and { $points } knowledge-base points (database revision { $revision }).
restore-revision-mismatch = The backup is of database revision { $archive }, but this database is at { $current }: restore into a database at { $archive } (`loopgram db upgrade { $archive }` on an empty one), or use the loopgram version that made the backup. Nothing was changed.
restore-unknown-revision = The backup is of database revision { $archive }, which this loopgram version does not know (this database is at { $current }): restore it with the version that made it. Nothing was changed.
restore-not-empty = The target is not empty ({ $rows } database rows, { $points } knowledge-base points): restore into an empty database, or pass --force to replace everything in it. Nothing was changed.

## loadtest
loadtest-starting = Load test: { $users } simulated users for { $minutes } min (model: { $model }); the bot, the Bot API emulator and the model listen on 127.0.0.1 only…
loadtest-progress = { $elapsed } / { $total } s · answered { $answered } · failed { $failed }
loadtest-title = Load test: { $users } users, { $seconds } s, model { $model }
loadtest-col-figure = figure
loadtest-col-value = value
loadtest-answered = answered
loadtest-failed = failed (no answer within { $timeout } s)
loadtest-throttled = told to slow down
loadtest-latency = model answer latency p50 / p95
loadtest-updates-rate = updates per second (sent by the users)
loadtest-api-rate = Bot API calls per second (made by the bot)
loadtest-limit-violations = sends refused by Telegram's flood control
loadtest-kinds-title = By action
loadtest-col-kind = action
loadtest-col-sent = sent
loadtest-col-answered = answered
loadtest-col-failed = failed
loadtest-col-p50 = p50
loadtest-col-p95 = p95
loadtest-kind-question = question (private chat)
loadtest-kind-group-question = question (group)
loadtest-kind-regenerate = 🔄 another version
loadtest-kind-press = 👍 / 👎 press
loadtest-kind-help = /help
loadtest-memory-title = Memory (RSS, MB): growth from the end of the warm-up (first { $warmup } %) to the end
loadtest-col-process = process
loadtest-col-pid = pid
loadtest-col-start = start
loadtest-col-warm = after warm-up
loadtest-col-end = end
loadtest-col-peak = peak
loadtest-col-growth = growth
loadtest-col-slope = MB/min
loadtest-col-verdict = verdict
loadtest-verdict-flat = flat
loadtest-verdict-growing = growing
loadtest-verdict-unknown = too few samples
loadtest-not-judged = not judged
loadtest-memory-verdict = Memory: { $verdict } (bound: growth under { $pct } % and under { $mb } MB for each judged process).
loadtest-shared-host = Host: { $cpus } CPUs, load average { $load }; the figures depend on whatever else runs on this machine.
loadtest-bad-model = Unknown model “{ $model }”: use fast or builtin.
loadtest-process-died = The { $what } process stopped (exit code { $code }): { $log }
loadtest-not-ready = The { $what } was not ready within { $seconds } s: { $log }
loadtest-driver-note = “driver” is this process: the Bot API emulator (which keeps every call and message, so it grows by design), the simulated users and the fast model; it is not judged.

## reward
error-reward-model-not-servable = { $name } is a reward model: it scores answers and is never served; only policy adapters (name-vN) can be deployed.
