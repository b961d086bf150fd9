// The loopgram playground page: plain JavaScript, no build step.
// It polls the playground server for the open chat and for what the bot stored, and acts
// as the chosen person (send text or a file, press a button) through its JSON API.
"use strict";

const STRINGS = {
  en: {
    title: "loopgram playground",
    actAs: "Act as",
    chats: "Chats",
    localNote: "No Telegram account needed: the real bot runs behind a local Telegram emulator.",
    stored: "What the bot stored",
    buffer: "Reward buffer",
    adapters: "Adapter per assistant",
    interactions: "Answers and ratings",
    chart: "/stats chart",
    placeholder: "Message",
    privateChat: "private chat",
    bot: "bot",
    members: "{n} people and the bot",
    role_user: "end user",
    role_moderator: "moderator",
    role_admin: "admin",
    "chat-note-team": "group: mention the bot or reply to it",
    "chat-note-moderators": "review cards arrive here",
    pairs: "preference pairs",
    ratings: "rated answers",
    pending: "awaiting review",
    baseModel: "base model",
    canary: "canary",
    noAnswers: "No answers yet: write to the bot.",
    edited: "edited",
    replyingTo: "Reply to {name}",
    sending: "Sending {name}…",
    you: "you",
    errors: {
      "empty-message": "The message is empty.",
      "message-too-long": "The message is too long: {length} characters; Telegram allows {limit}.",
      "caption-too-long": "The caption is too long: {length} characters; Telegram allows {limit}.",
      "empty-file": "The file “{name}” is empty.",
      "file-too-large": "The file is too large: at most {mb} MB.",
      "no-file": "Choose a file first.",
      "forged-button": "That button is not on this message (any more): Telegram would not send it.",
      "unknown-message": "That message is gone.",
      "unknown-user": "There is no such person here.",
      "unknown-chat": "There is no such chat here.",
      "not-your-chat": "That is someone else's private chat.",
      "bad-text": "The text contains characters Telegram does not accept.",
      "bad-request": "The playground did not understand that request.",
      "bad-host": "Open the playground at the address it printed.",
      "bad-origin": "Requests from other sites are refused.",
      internal: "The playground failed on that; its log says why.",
      network: "The playground server does not answer. Is `loopgram playground` still running?",
    },
  },
  ru: {
    title: "песочница loopgram",
    actAs: "Действовать как",
    chats: "Чаты",
    localNote: "Аккаунт Telegram не нужен: настоящий бот работает за локальным эмулятором Telegram.",
    stored: "Что сохранил бот",
    buffer: "Буфер наград",
    adapters: "Адаптер каждого ассистента",
    interactions: "Ответы и оценки",
    chart: "График /stats",
    placeholder: "Сообщение",
    privateChat: "личный чат",
    bot: "бот",
    members: "{n} человека и бот",
    role_user: "пользователь",
    role_moderator: "модератор",
    role_admin: "администратор",
    "chat-note-team": "группа: упомяните бота или ответьте ему",
    "chat-note-moderators": "сюда приходят карточки на проверку",
    pairs: "пар предпочтений",
    ratings: "оценённых ответов",
    pending: "ждут проверки",
    baseModel: "базовая модель",
    canary: "канарейка",
    noAnswers: "Ответов пока нет: напишите боту.",
    edited: "изменено",
    replyingTo: "Ответ для {name}",
    sending: "Отправляю {name}…",
    you: "вы",
    errors: {
      "empty-message": "Сообщение пустое.",
      "message-too-long": "Сообщение слишком длинное: {length} символов, Telegram принимает {limit}.",
      "caption-too-long": "Подпись слишком длинная: {length} символов, Telegram принимает {limit}.",
      "empty-file": "Файл «{name}» пустой.",
      "file-too-large": "Файл слишком большой: не больше {mb} МБ.",
      "no-file": "Сначала выберите файл.",
      "forged-button": "Такой кнопки на этом сообщении нет (уже нет): Telegram бы её не отправил.",
      "unknown-message": "Этого сообщения больше нет.",
      "unknown-user": "Такого человека здесь нет.",
      "unknown-chat": "Такого чата здесь нет.",
      "not-your-chat": "Это чужой личный чат.",
      "bad-text": "В тексте есть символы, которые Telegram не принимает.",
      "bad-request": "Песочница не поняла запрос.",
      "bad-host": "Откройте песочницу по адресу, который она напечатала.",
      "bad-origin": "Запросы с других сайтов отклоняются.",
      internal: "В песочнице что-то сломалось; причина — в её журнале.",
      network: "Сервер песочницы не отвечает. `loopgram playground` ещё работает?",
    },
  },
};

const state = {
  config: null,
  lang: "en",
  me: null, // identity id
  chat: null, // chat id
  version: null,
  answersNext: 0,
  messages: [],
  drafts: [],
  interactions: [], // from the panel
  chartVersion: null,
  replyTo: null,
  highlight: null,
  busy: false,
};

const $ = (id) => document.getElementById(id);

function s(key, params) {
  const table = STRINGS[state.lang] || STRINGS.en;
  let text = key.split(".").reduce((o, k) => (o ? o[k] : undefined), table);
  if (text === undefined) text = key.split(".").reduce((o, k) => (o ? o[k] : undefined), STRINGS.en);
  if (text === undefined) return key;
  return String(text).replace(/\{(\w+)\}/g, (_, name) => (params && name in params ? params[name] : `{${name}}`));
}

function esc(text) {
  return String(text).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

function safeUrl(url) {
  try {
    const parsed = new URL(url, "https://t.me/");
    return ["http:", "https:", "tg:", "mailto:", "tel:"].includes(parsed.protocol) ? parsed.href : null;
  } catch (e) {
    return null;
  }
}

// --- Telegram entities -> HTML ----------------------------------------------------------
// Offsets and lengths are UTF-16 code units, which is what JavaScript strings index by.

function renderEntities(text, entities) {
  const sorted = (entities || [])
    .filter((e) => e.length > 0 && e.offset >= 0 && e.offset < text.length)
    .slice()
    .sort((a, b) => a.offset - b.offset || b.length - a.length);
  const root = { start: 0, end: text.length, children: [] };
  const stack = [root];
  for (const entity of sorted) {
    const start = entity.offset;
    while (stack.length > 1 && start >= stack[stack.length - 1].end) stack.pop();
    const parent = stack[stack.length - 1];
    const node = { entity, start, end: Math.min(start + entity.length, parent.end), children: [] };
    parent.children.push(node);
    stack.push(node);
  }
  const render = (node) => {
    let out = "";
    let pos = node.start;
    for (const child of node.children) {
      if (child.start < pos) continue;
      out += esc(text.slice(pos, child.start)) + wrap(child.entity, text.slice(child.start, child.end), render(child));
      pos = child.end;
    }
    return out + esc(text.slice(pos, node.end));
  };
  return render(root);
}

function wrap(entity, raw, inner) {
  switch (entity.type) {
    case "bold": return `<b>${inner}</b>`;
    case "italic": return `<i>${inner}</i>`;
    case "underline": return `<u>${inner}</u>`;
    case "strikethrough": return `<s>${inner}</s>`;
    case "spoiler": return `<span class="spoiler">${inner}</span>`;
    case "code": return `<code>${inner}</code>`;
    case "pre": return `<pre><code${entity.language ? ` data-lang="${esc(entity.language)}"` : ""}>${inner}</code></pre>`;
    case "blockquote": return `<blockquote>${inner}</blockquote>`;
    case "expandable_blockquote": return `<blockquote class="expandable">${inner}</blockquote>`;
    case "text_link": {
      const url = safeUrl(entity.url);
      return url ? `<a href="${esc(url)}" target="_blank" rel="noopener noreferrer" title="${esc(url)}">${inner}</a>` : inner;
    }
    case "url": {
      const url = safeUrl(/^[a-z]+:/i.test(raw) ? raw : `http://${raw}`);
      return url ? `<a href="${esc(url)}" target="_blank" rel="noopener noreferrer">${inner}</a>` : inner;
    }
    case "email": return `<a href="mailto:${esc(raw)}">${inner}</a>`;
    case "phone_number": return `<a href="tel:${esc(raw.replace(/[^+\d]/g, ""))}">${inner}</a>`;
    case "mention": return `<a href="https://t.me/${esc(raw.slice(1))}" target="_blank" rel="noopener noreferrer">${inner}</a>`;
    case "text_mention": return `<a>${inner}</a>`;
    case "hashtag":
    case "cashtag": return `<a>${inner}</a>`;
    case "bot_command": return `<span class="cmd" data-command="${esc(raw)}">${inner}</span>`;
    default: return inner;
  }
}

// --- talking to the server --------------------------------------------------------------

async function api(path, options) {
  let response;
  try {
    response = await fetch(path, options);
  } catch (e) {
    throw { error: "network" };
  }
  let body = null;
  try {
    body = await response.json();
  } catch (e) {
    throw { error: "bad-request", description: `HTTP ${response.status}` };
  }
  if (!body.ok) throw body;
  return body.result;
}

function postJson(path, payload) {
  return api(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(payload) });
}

function showError(err) {
  const key = err && err.error ? err.error : "bad-request";
  const params = Object.assign({}, err && err.params);
  if (params.limit && key === "file-too-large") params.mb = Math.floor(params.limit / 1048576);
  const known = (STRINGS[state.lang].errors || {})[key];
  toast(known ? s(`errors.${key}`, params) : (err && err.description) || key, true);
}

let toastTimer = null;
function toast(text, isError) {
  const el = $("toast");
  el.textContent = text;
  el.className = isError ? "error" : "";
  el.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { el.hidden = true; }, isError ? 5000 : 3000);
}

function alertBox(text) {
  $("alert-text").textContent = text;
  $("alert").hidden = false;
  $("alert-ok").focus();
}

// --- people and chats -------------------------------------------------------------------

function identity(id) {
  return state.config.identities.find((i) => i.id === id);
}

function nameOf(user) {
  if (!user) return "";
  if (user.is_bot) return state.config.bot.name;
  const known = identity(user.id);
  return known ? known.name : user.first_name;
}

function initials(name) {
  return name.replace(/\(.*\)/, "").trim().slice(0, 1).toUpperCase();
}

const COLORS = ["#e17076", "#7bc862", "#65aadd", "#a695e7", "#ee7aae", "#6ec9cb", "#faa774"];
function color(id) {
  return COLORS[Math.abs(Number(id)) % COLORS.length];
}

function renderSidebar() {
  const ids = $("identities");
  ids.innerHTML = "";
  for (const person of state.config.identities) {
    const li = document.createElement("li");
    li.dataset.testid = `identity-${person.username}`;
    li.className = person.id === state.me ? "active" : "";
    li.innerHTML = `<div class="avatar" style="background:${color(person.id)}">${esc(initials(person.name))}</div>
      <div><div>${esc(person.name)}</div><div class="role">${esc(s(`role_${person.role}`))}</div></div>`;
    li.onclick = () => selectIdentity(person.id);
    ids.appendChild(li);
  }
  const chats = $("chats");
  chats.innerHTML = "";
  const list = [{ id: state.me, title: state.config.bot.name, note: s("privateChat"), key: "private" }].concat(
    state.config.groups.map((g) => ({ id: g.id, title: g.title, note: s(g.note), key: String(g.id) })),
  );
  for (const chat of list) {
    const li = document.createElement("li");
    li.dataset.testid = `chat-${chat.key}`;
    li.className = chat.id === state.chat ? "active" : "";
    li.innerHTML = `<div class="avatar" style="background:${chat.key === "private" ? "#3390ec" : color(chat.id)}">${chat.key === "private" ? "🤖" : esc(initials(chat.title))}</div>
      <div><div>${esc(chat.title)}</div><div class="chat-note">${esc(chat.note)}</div></div>`;
    li.onclick = () => selectChat(chat.id);
    chats.appendChild(li);
  }
  const group = state.config.groups.find((g) => g.id === state.chat);
  $("chat-title").textContent = group ? group.title : state.config.bot.name;
  $("chat-subtitle").textContent = group
    ? s("members", { n: state.config.identities.length })
    : `@${state.config.bot.username} · ${s("bot")}`;
  const avatar = $("chat-avatar");
  avatar.textContent = group ? initials(group.title) : "🤖";
  avatar.style.background = group ? color(group.id) : "#3390ec";
}

function selectIdentity(id) {
  const wasPrivate = !state.config.groups.some((g) => g.id === state.chat);
  state.me = id;
  if (wasPrivate) state.chat = id;
  resetChat();
}

function selectChat(id) {
  state.chat = id;
  resetChat();
}

function resetChat() {
  state.version = null;
  state.messages = [];
  state.drafts = [];
  state.replyTo = null;
  $("messages").innerHTML = "";
  renderReplyBanner();
  renderSidebar();
  pollChat();
}

// --- the chat ---------------------------------------------------------------------------

function interactionFor(message) {
  return state.interactions.find((i) => i.chat_id === state.chat && i.message_ids.includes(message.message_id));
}

function messageBody(message) {
  let html = "";
  const reply = message.reply_to_message;
  if (reply) {
    const quoted = reply.text || reply.caption || "…";
    html += `<div class="quote"><b>${esc(nameOf(reply.from))}</b>${esc(quoted.slice(0, 120))}</div>`;
  }
  if (message.photo && message.photo.length) {
    const biggest = message.photo[message.photo.length - 1];
    html += `<img class="photo" src="/api/files/${encodeURIComponent(biggest.file_id)}" alt="">`;
  }
  if (message.document) {
    const doc = message.document;
    const kb = Math.max(1, Math.round((doc.file_size || 0) / 1024));
    html += `<a class="doc" href="/api/files/${encodeURIComponent(doc.file_id)}" download="${esc(doc.file_name || "file")}">
      <span class="icon">📄</span><span>${esc(doc.file_name || "file")}<br><small>${kb} KB</small></span></a>`;
  }
  if (message.sticker) html += `<div class="sticker">${esc(message.sticker.emoji || "🖼")}</div>`;
  if (message.voice) html += `<div>🎤 ${esc(String(message.voice.duration || 0))} s</div>`;
  if (message.text !== undefined) html += `<div class="text">${renderEntities(message.text, message.entities)}</div>`;
  else if (message.caption !== undefined) html += `<div class="text">${renderEntities(message.caption, message.caption_entities)}</div>`;
  return html;
}

function keyboardHtml(message) {
  const rows = ((message.reply_markup || {}).inline_keyboard || []);
  if (!rows.length) return "";
  let html = `<div class="keyboard">`;
  for (const row of rows) {
    html += `<div class="kb-row">`;
    for (const button of row) {
      if (button.callback_data !== undefined) {
        html += `<button type="button" data-press="${esc(button.callback_data)}" data-message="${message.message_id}">${esc(button.text)}</button>`;
      } else if (button.url && safeUrl(button.url)) {
        html += `<a href="${esc(safeUrl(button.url))}" target="_blank" rel="noopener noreferrer">${esc(button.text)} ↗</a>`;
      } else {
        html += `<button type="button" disabled>${esc(button.text)}</button>`;
      }
    }
    html += `</div>`;
  }
  return html + `</div>`;
}

function renderMessages() {
  const box = $("messages");
  const nearBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
  const isGroup = state.chat < 0;
  let html = "";
  for (const message of state.messages) {
    const mine = message.from && message.from.id === state.me;
    if (message.new_chat_members || message.left_chat_member || message.pinned_message) {
      html += `<div class="service">${esc(message.text || "")}</div>`;
      continue;
    }
    const fromBot = message.from && message.from.is_bot;
    const interaction = fromBot ? interactionFor(message) : null;
    const time = new Date((message.edit_date || message.date) * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    html += `<div class="row ${mine ? "out" : "in"}" data-testid="${fromBot ? "bot-message" : "user-message"}" data-message-id="${message.message_id}">
      <div class="bubble">`;
    if (isGroup && !mine) html += `<div class="sender" style="color:${color(message.from ? message.from.id : 0)}">${esc(nameOf(message.from))}</div>`;
    html += messageBody(message);
    html += `<div class="meta">${interaction ? `<span class="iid" data-iid="${interaction.id}">#${interaction.id}</span>` : ""}${message.edit_count ? esc(s("edited")) + " " : ""}${time}</div></div>`;
    html += keyboardHtml(message);
    html += `</div>`;
  }
  for (const draft of state.drafts) {
    html += `<div class="row in" data-testid="draft"><div class="bubble draft"><div class="text">${renderEntities(draft.text, draft.entities)}</div></div></div>`;
  }
  box.innerHTML = html;
  if (nearBottom || state.busy) box.scrollTop = box.scrollHeight;
  renderReplyKeyboard();
}

function renderReplyKeyboard() {
  const el = $("reply-keyboard");
  let markup = null;
  for (const message of state.messages) {
    if (message.from && message.from.is_bot && message.reply_keyboard) markup = message.reply_keyboard;
  }
  const rows = markup && markup.keyboard;
  if (!rows || !rows.length) {
    el.hidden = true;
    return;
  }
  el.innerHTML = rows.map((row) => `<div class="kb-row">${row.map((b) => `<button type="button" data-say="${esc(typeof b === "string" ? b : b.text)}">${esc(typeof b === "string" ? b : b.text)}</button>`).join("")}</div>`).join("");
  el.hidden = false;
}

function renderReplyBanner() {
  const banner = $("reply-banner");
  const message = state.replyTo && state.messages.find((m) => m.message_id === state.replyTo);
  if (!message) {
    banner.hidden = true;
    state.replyTo = null;
    return;
  }
  $("reply-banner-text").textContent = s("replyingTo", { name: nameOf(message.from) });
  banner.hidden = false;
}

let polling = false;
async function pollChat() {
  if (polling || state.me === null) return;
  polling = true;
  const chat = state.chat;
  const me = state.me;
  try {
    const query = new URLSearchParams({ as: me, answers: state.answersNext });
    if (state.version) query.set("version", state.version);
    const result = await api(`/api/chats/${chat}?${query}`);
    if (chat !== state.chat || me !== state.me) return;
    state.answersNext = result.answers_next;
    for (const answer of result.answers || []) {
      if (!answer.text) continue;
      if (answer.show_alert) alertBox(answer.text);
      else toast(answer.text);
    }
    if (!result.unchanged) {
      state.version = result.version;
      state.messages = result.messages;
      state.drafts = result.drafts;
      renderMessages();
    }
  } catch (err) {
    if (err.error === "network") showError(err);
  } finally {
    polling = false;
  }
}

// --- the side panel ---------------------------------------------------------------------

async function pollPanel() {
  let data;
  try {
    data = await api("/api/panel");
  } catch (err) {
    return;
  }
  const before = JSON.stringify(state.interactions.map((i) => [i.id, i.message_ids]));
  state.interactions = data.interactions;
  $("buffer").innerHTML = `<div class="figure" data-testid="buffer-pairs"><b>${data.buffer.pairs}</b><span>${esc(s("pairs"))}</span></div>
    <div class="figure" data-testid="buffer-ratings"><b>${data.buffer.ratings}</b><span>${esc(s("ratings"))}</span></div>
    <div class="figure" data-testid="review-pending"><b>${data.review_pending}</b><span>${esc(s("pending"))}</span></div>`;
  $("adapters").innerHTML = Object.entries(data.assistants).map(([name, a]) => `<tr>
      <td>${esc(name)}</td>
      <td class="${a.active ? "" : "base"}">${esc(a.active || s("baseModel"))}${a.canary ? ` · ${esc(s("canary"))} ${esc(a.canary)}` : ""}</td>
      <td title="${esc(s("pairs"))} / ${esc(s("ratings"))}">${a.buffer.pairs} / ${a.buffer.ratings}</td></tr>`).join("");
  const list = $("interactions");
  if (!data.interactions.length) {
    list.innerHTML = `<div class="empty">${esc(s("noAnswers"))}</div>`;
  } else {
    list.innerHTML = data.interactions.map((i) => `<div class="interaction${state.highlight === i.id ? " highlight" : ""}" data-testid="interaction" data-iid="${i.id}">
        <div class="head"><span>#${i.id} · ${esc(i.assistant)} · ${esc(i.user)}</span><span>${esc(i.adapter || s("baseModel"))}${i.latency_ms !== null ? ` · ${i.latency_ms} ms` : ""}</span></div>
        <div class="prompt">${esc(i.prompt)}</div>
        <div class="answer">${esc(i.answer)}</div>
        <div class="ratings">${i.ratings.map((r) => `<span class="rating" data-testid="rating">${r.value > 0 ? "👍" : "👎"} ${esc(r.user)}${r.reason ? ` · ${esc(r.reason)}` : ""}${r.comment ? ` · “${esc(r.comment)}”` : ""}</span>`).join("")}</div>
      </div>`).join("");
  }
  if (data.chart_version !== state.chartVersion) {
    state.chartVersion = data.chart_version;
    $("chart").src = `/api/stats.png?v=${encodeURIComponent(data.chart_version)}`;
  }
  if (before !== JSON.stringify(state.interactions.map((i) => [i.id, i.message_ids]))) renderMessages();
}

// --- acting -----------------------------------------------------------------------------

async function sendText(text) {
  const payload = { as: state.me, chat: state.chat, text };
  if (state.replyTo) payload.reply_to = state.replyTo;
  state.busy = true;
  try {
    await postJson("/api/send", payload);
    state.replyTo = null;
    renderReplyBanner();
    return true;
  } catch (err) {
    showError(err);
    return false;
  } finally {
    await pollChat();
    state.busy = false;
  }
}

async function sendFile(file) {
  const form = new FormData();
  form.append("as", String(state.me));
  form.append("chat", String(state.chat));
  const caption = $("input").value;
  if (caption.trim()) form.append("caption", caption);
  form.append("file", file, file.name);
  toast(s("sending", { name: file.name }));
  try {
    await api("/api/send", { method: "POST", body: form });
    $("input").value = "";
  } catch (err) {
    showError(err);
  }
  pollChat();
}

async function press(messageId, data, button) {
  if (button) button.disabled = true;
  try {
    await postJson("/api/press", { as: state.me, chat: state.chat, message_id: messageId, data });
  } catch (err) {
    showError(err);
  } finally {
    if (button) setTimeout(() => { button.disabled = false; }, 400);
  }
  pollChat();
}

function applyLanguage() {
  document.documentElement.lang = state.lang;
  for (const el of document.querySelectorAll("[data-i18n]")) el.textContent = s(el.dataset.i18n);
  $("input").placeholder = s("placeholder");
  $("lang-toggle").textContent = state.lang.toUpperCase();
  renderSidebar();
  renderMessages();
  pollPanel();
}

async function main() {
  state.config = await api("/api/config");
  state.lang = localStorage.getItem("playground-lang") || state.config.lang || "en";
  if (!STRINGS[state.lang]) state.lang = "en";
  state.me = state.config.identities[0].id;
  state.chat = state.me;
  // Old alerts belong to earlier visits: start from the current end.
  const start = await api(`/api/chats/${state.chat}?as=${state.me}&answers=0`);
  state.answersNext = start.answers_next;
  applyLanguage();

  $("lang-toggle").onclick = () => {
    state.lang = state.lang === "en" ? "ru" : "en";
    localStorage.setItem("playground-lang", state.lang);
    applyLanguage();
  };
  $("composer").addEventListener("submit", async (event) => {
    event.preventDefault();
    const input = $("input");
    const text = input.value;
    if (!text.trim()) {
      showError({ error: "empty-message" });
      return;
    }
    if (await sendText(text)) input.value = "";
    input.focus();
  });
  $("input").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      $("composer").requestSubmit();
    }
  });
  $("file-input").addEventListener("change", (event) => {
    const file = event.target.files[0];
    event.target.value = "";
    if (!file) return;
    if (file.size > state.config.limits.file_bytes) {
      showError({ error: "file-too-large", params: { limit: state.config.limits.file_bytes } });
      return;
    }
    sendFile(file);
  });
  $("messages").addEventListener("click", (event) => {
    const target = event.target;
    const pressed = target.closest("[data-press]");
    if (pressed) return press(Number(pressed.dataset.message), pressed.dataset.press, pressed);
    const command = target.closest("[data-command]");
    if (command) return sendText(command.dataset.command);
    const spoiler = target.closest(".spoiler");
    if (spoiler) return spoiler.classList.toggle("shown");
    const quote = target.closest("blockquote.expandable");
    if (quote) return quote.classList.toggle("open");
    const iid = target.closest("[data-iid]");
    if (iid) {
      state.highlight = Number(iid.dataset.iid);
      return pollPanel();
    }
    const row = target.closest(".row");
    if (row && event.detail === 2) {
      state.replyTo = Number(row.dataset.messageId);
      renderReplyBanner();
      $("input").focus();
    }
  });
  $("reply-keyboard").addEventListener("click", (event) => {
    const button = event.target.closest("[data-say]");
    if (button) sendText(button.dataset.say);
  });
  $("reply-cancel").onclick = () => { state.replyTo = null; renderReplyBanner(); };
  $("alert-ok").onclick = () => { $("alert").hidden = true; };
  setInterval(pollChat, 300);
  setInterval(pollPanel, 1500);
}

main().catch((err) => showError(err));
