// pychat's page: an IRC client over a WebSocket (subprotocol text.ircv3.net).
// One view per room and per direct conversation; commands are typed as in nc.
"use strict";

const $ = (id) => document.getElementById(id);
const MAX_LINES = 5000;          // kept per view (the oldest go first)
const CATCH_UP_PAGE = 100;       // messages asked for at a time after a reconnection
const BACKOFF_MAX = 30;          // seconds between reconnection attempts, at most
const CAPS = ["server-time", "echo-message", "message-tags", "batch"];

const HISTORY_PAGE = 50;         // older messages asked for at a time (scrolling up)
const state = {
  ws: null, nick: "", password: "", registered: false, quitting: false,
  batches: new Map(),            // open chathistory batches: id -> {view, lines}
  views: new Map(),              // key ("#room" or a folded nick) -> view
  current: null, backoff: 1, timer: null,
};

// -- IRC lines ---------------------------------------------------------------------

function parse(line) {
  const msg = { tags: {}, source: "", command: "", params: [] };
  let rest = line;
  if (rest.startsWith("@")) {
    const space = rest.indexOf(" ");
    for (const tag of rest.slice(1, space).split(";")) {
      const eq = tag.indexOf("=");
      msg.tags[eq < 0 ? tag : tag.slice(0, eq)] = eq < 0 ? "" : tag.slice(eq + 1);
    }
    rest = rest.slice(space + 1).replace(/^ +/, "");
  }
  if (rest.startsWith(":")) {
    const space = rest.indexOf(" ");
    msg.source = rest.slice(1, space);
    rest = rest.slice(space + 1).replace(/^ +/, "");
  }
  while (rest.length) {
    if (rest.startsWith(":")) { msg.params.push(rest.slice(1)); break; }
    const space = rest.indexOf(" ");
    if (space < 0) { msg.params.push(rest); break; }
    msg.params.push(rest.slice(0, space));
    rest = rest.slice(space + 1).replace(/^ +/, "");
  }
  msg.command = (msg.params.shift() || "").toUpperCase();
  return msg;
}

const nickOf = (source) => source.split("!")[0];
const fold = (name) => name.toLowerCase();
const isMe = (name) => fold(name) === fold(state.nick);

function send(line) {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(line);
}

// -- connection ----------------------------------------------------------------------

function connect() {
  clearTimeout(state.timer);
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${scheme}://${location.host}/ws`, ["text.ircv3.net"]);
  state.ws = ws;
  state.registered = false;
  setStatus("connecting…");
  ws.onopen = () => {
    send(`CAP REQ :${CAPS.join(" ")}`);
    if (state.password) send(`PASS :${state.password}`);
    send(`NICK ${state.nick}`);
    send(`USER ${state.nick} 0 * :${state.nick}`);
  };
  ws.onmessage = (event) => { for (const line of String(event.data).split(/\r?\n/)) if (line) handle(parse(line)); };
  ws.onclose = () => {
    if (state.ws !== ws) return;
    state.ws = null;
    state.batches.clear();  // their ends will never come
    if (state.quitting) { setStatus("disconnected"); return; }
    if ($("chat").hidden) { loginFailed("the server closed the connection"); return; }  // never got in
    const wait = Math.min(state.backoff, BACKOFF_MAX);
    state.backoff = Math.min(state.backoff * 2, BACKOFF_MAX);
    setStatus(`disconnected; reconnecting in ${wait} s`);
    state.timer = setTimeout(connect, wait * 1000 * (0.8 + Math.random() * 0.4));
  };
}

function setStatus(text) { $("status").textContent = text; }

function loginFailed(text) {
  state.quitting = true;
  if (state.ws) state.ws.close();
  $("login-error").textContent = text;
  $("chat").hidden = true;
  $("login").hidden = false;
}

// -- what the server says ------------------------------------------------------------

function handle(msg) {
  const p = msg.params;
  const who = nickOf(msg.source);
  switch (msg.command) {
    case "PING": send(`PONG :${p[0] || ""}`); return;
    case "CAP": if (p[1] === "ACK" || p[1] === "NAK") send("CAP END"); return;
    case "001":
      state.nick = p[0]; state.registered = true; state.backoff = 1;
      $("login").hidden = true; $("chat").hidden = false;
      setStatus(`connected as ${state.nick}`);
      rejoin();
      return;
    case "433": case "432": case "464": case "465": case "904":
      if (!state.registered && !$("chat").hidden && msg.command === "433") {
        // Reconnecting, and the server has not yet let the old connection go.
        setStatus("the name is still taken; trying again");
        state.ws.close();
        return;
      }
      if (!state.registered) { loginFailed(p.slice(1).join(" ")); return; }
      break;
    case "ERROR": setStatus(p[0] || "closed"); return;
    case "BATCH": {
      const id = p[0].slice(1);
      if (p[0].startsWith("+") && p[1] === "chathistory") {
        state.batches.set(id, { view: ensureView(p[2], "room"), lines: [] });
      } else if (p[0].startsWith("-") && state.batches.has(id)) {
        const batch = state.batches.get(id);
        state.batches.delete(id);
        mergeHistory(batch.view, batch.lines);
      }
      return;
    }
    case "JOIN": {
      const view = ensureView(p[0], "room");
      if (isMe(who)) {
        view.joined = true;
        view.members.clear();
        catchUp(view);
        if (!state.current || state.current.key === view.key || state.pendingSwitch === fold(p[0])) show(view);
      } else {
        view.members.add(who);
        addLine(view, { time: msg.tags.time, cls: "notice", text: `--> ${who} has joined` });
      }
      renderMembers();
      return;
    }
    case "PART": case "KICK": {
      const view = state.views.get(fold(p[0]));
      if (!view) return;
      const gone = msg.command === "KICK" ? p[1] : who;
      view.members.delete(gone);
      const why = msg.command === "KICK" ? `was kicked by ${who}` : "has left";
      addLine(view, { time: msg.tags.time, cls: "notice", text: `<-- ${gone} ${why}${p[msg.command === "KICK" ? 2 : 1] ? ` (${p[msg.command === "KICK" ? 2 : 1]})` : ""}` });
      if (isMe(gone)) { view.joined = false; }
      renderMembers();
      return;
    }
    case "QUIT":
      for (const view of state.views.values()) {
        if (view.members.delete(who)) addLine(view, { time: msg.tags.time, cls: "notice", text: `<-- ${who} has quit${p[0] ? ` (${p[0]})` : ""}` });
      }
      renderMembers();
      return;
    case "NICK":
      for (const view of state.views.values()) {
        if (view.members.delete(who)) {
          view.members.add(p[0]);
          addLine(view, { time: msg.tags.time, cls: "notice", text: `-- ${who} is now known as ${p[0]}` });
        }
      }
      if (isMe(who)) { state.nick = p[0]; setStatus(`connected as ${state.nick}`); }
      renderMembers();
      return;
    case "353": {
      const view = ensureView(p[2], "room");
      for (const name of (p[3] || "").split(" ")) if (name) view.members.add(name.replace(/^[@+]+/, ""));
      renderMembers();
      return;
    }
    case "366": return;
    case "332": ensureView(p[1], "room").topic = p[2] || ""; renderTitle(); return;
    case "TOPIC": {
      const view = ensureView(p[0], "room");
      view.topic = p[1] || "";
      addLine(view, { time: msg.tags.time, cls: "notice", text: `-- ${who} set the topic: ${view.topic}` });
      renderTitle();
      return;
    }
    case "PRIVMSG": case "NOTICE": {
      if (!msg.source.includes("!")) break;  // a server notice: shown as information
      const target = p[0].replace(/^[@+]/, "");
      const room = target.startsWith("#");
      const view = ensureView(room ? target : (isMe(who) ? target : who), room ? "room" : "dm");
      let text = p[1] || "", action = false;
      if (text.startsWith("\x01ACTION ") || text === "\x01ACTION\x01") { action = true; text = text.slice(8).replace(/\x01$/, ""); }
      else if (text.startsWith("\x01")) return;  // other CTCP: not shown
      const mention = !isMe(who) && mentions(text);
      // The key tells a line seen before (a replay) from a new one; with the time in
      // it, a server restarted without its history cannot make a new line look old.
      const line = { time: msg.tags.time, nick: who, text, action, mention, id: msg.tags.msgid || "",
                     key: `${msg.tags.msgid || `${who}|${text}`}|${msg.tags.time}` };
      const batch = state.batches.get(msg.tags.batch);
      if (batch) { batch.lines.push(line); return; }  // history: merged in order when the batch ends
      addLine(view, line);
      const id = idOf(line);
      if (id !== null) view.newest = later(view.newest, id);
      if (mention) notify(view, who, text);
      return;
    }
  }
  // Anything else: numerics and replies, shown as information in the current view.
  if (/^[0-9]{3}$/.test(msg.command)) {
    const text = p.slice(1).join(" ");
    const error = msg.command[0] === "4" || msg.command[0] === "5";
    if (state.current) addLine(state.current, { cls: error ? "err" : "info", text: `${error ? "! " : "* "}${text}` });
  } else if (msg.command === "NOTICE" && state.current) {
    addLine(state.current, { cls: "info", text: `* ${p.slice(1).join(" ")}` });
  }
}

function mentions(text) {
  const nick = state.nick.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  return new RegExp(`(^|[^\\p{L}\\p{N}_])${nick}($|[^\\p{L}\\p{N}_])`, "iu").test(text);
}

function notify(view, who, text) {
  if (!document.hidden || !("Notification" in window) || Notification.permission !== "granted") return;
  new Notification(`${who} in ${view.name}`, { body: text, tag: view.key });
}

// -- views -------------------------------------------------------------------------

function ensureView(name, kind) {
  const key = fold(name);
  let view = state.views.get(key);
  if (!view) {
    view = { key, name, kind, lines: [], seen: new Set(), unread: 0, members: new Set(), topic: "", joined: false };
    state.views.set(key, view);
    renderNav();
  }
  return view;
}

function addLine(view, line) {
  line.time = line.time || new Date().toISOString();
  if (line.key) {
    if (view.seen.has(line.key)) return;  // replayed again after a reconnection
    view.seen.add(line.key);
  }
  view.lines.push(line);
  trim(view);
  if (state.current === view) {
    const log = $("log");
    const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
    log.appendChild(renderLine(line));
    while (log.childElementCount > MAX_LINES) log.firstElementChild.remove();
    if (atBottom) log.scrollTop = log.scrollHeight;
  } else if (line.nick) {
    view.unread += 1;
    renderNav();
  }
}

// A stored message's id, or null. Ids are BigInts: a cluster's, made from its
// stream's clock, are past 2**53, where a Number no longer holds every integer.
function idOf(line) {
  return /^\d+$/.test(line.id || "") ? BigInt(line.id) : null;
}

function later(a, b) { return a === undefined || b > a ? b : a; }
function earlier(a, b) { return a === undefined || b < a ? b : a; }

// Lines with ids in their order, those without after them.
function byId(a, b) {
  const x = idOf(a), y = idOf(b);
  if (x === null || y === null) return (x === null) - (y === null);
  return x < y ? -1 : x > y ? 1 : 0;
}

// Stored messages (a replay on joining, or CHATHISTORY): merged into the view in
// order of their ids, each once however often it comes.
function mergeHistory(view, lines) {
  const fresh = lines.filter((line) => !view.seen.has(line.key));
  for (const line of fresh) view.seen.add(line.key);
  const ids = lines.map(idOf).filter((id) => id !== null);
  const lowest = ids.reduce(earlier, undefined), highest = ids.reduce(later, undefined);
  // A whole page of messages after the catch-up's anchor (the answer to AFTER;
  // a replay on joining is shorter) may not be all: ask for the next page.
  const more = lines.length >= CATCH_UP_PAGE && ids.length && view.catchUpFrom !== undefined
    && lowest > view.catchUpFrom;
  if (view.asked && !more && (!ids.length || highest < (view.oldest || Infinity))) {
    view.loading = view.asked = false;  // the answer to BEFORE
    if (!lines.length) view.complete = true;  // nothing older: the start of the room
  }
  if (ids.length) {
    view.oldest = earlier(view.oldest, lowest);
    view.newest = later(view.newest, highest);
  }
  if (more) {
    view.catchUpFrom = highest;
    send(`CHATHISTORY AFTER ${view.name} msgid=${view.catchUpFrom} ${CATCH_UP_PAGE}`);
  }
  if (!fresh.length) return;
  // In time order (stored and live lines alike carry the server's time), ties by id.
  view.lines = view.lines.concat(fresh).sort((a, b) => (a.time < b.time ? -1 : a.time > b.time ? 1 : byId(a, b)));
  trim(view);
  if (state.current === view) {
    const log = $("log");
    const fromBottom = log.scrollHeight - log.scrollTop;
    log.replaceChildren(...view.lines.map(renderLine));
    log.scrollTop = log.scrollHeight - fromBottom;  // what was on screen stays there
    if (log.scrollHeight <= log.clientHeight + 40) loadOlder();  // no scrolling yet: fill the screen first
  }
}

// At most MAX_LINES lines per view, and the keys of those only.
function trim(view) {
  if (view.lines.length > MAX_LINES) view.lines.splice(0, view.lines.length - MAX_LINES);
  if (view.seen.size > 2 * MAX_LINES) view.seen = new Set(view.lines.map((line) => line.key).filter(Boolean));
}

// Scrolled to the top: ask for the page of messages before the oldest one shown.
function loadOlder() {
  const view = state.current;
  if (!view || view.kind !== "room" || view.loading || view.complete || !view.oldest) return;
  view.loading = view.asked = true;
  send(`CHATHISTORY BEFORE ${view.name} msgid=${view.oldest} ${HISTORY_PAGE}`);
}

// After a reconnection: whatever was said while away, after the newest message seen.
function catchUp(view) {
  if (!view.newest) return;
  view.catchUpFrom = view.newest;
  send(`CHATHISTORY AFTER ${view.name} msgid=${view.newest} ${CATCH_UP_PAGE}`);
}

function renderLine(line) {
  const li = document.createElement("li");
  const when = new Date(line.time);
  const time = document.createElement("time");
  time.dateTime = when.toISOString();
  time.title = when.toLocaleString();
  time.textContent = when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  li.appendChild(time);
  li.appendChild(document.createTextNode(" "));
  if (line.nick) {
    const nick = document.createElement("span");
    nick.className = "nick";
    nick.textContent = line.action ? `* ${line.nick}` : `${line.nick}:`;
    li.appendChild(nick);
    li.appendChild(document.createTextNode(" "));
    if (line.mention) li.classList.add("mention");
  } else {
    li.classList.add(line.cls || "info");
  }
  li.appendChild(document.createTextNode(line.text));
  return li;
}

function show(view) {
  state.current = view;
  state.pendingSwitch = null;
  view.unread = 0;
  const log = $("log");
  log.replaceChildren(...view.lines.map(renderLine));
  log.scrollTop = log.scrollHeight;
  $("chat").classList.remove("menu-open");
  renderNav(); renderTitle(); renderMembers();
}

function renderTitle() {
  const view = state.current;
  $("title").textContent = view ? view.name : "";
  $("topic").textContent = view ? view.topic : "";
}

function renderNav() {
  for (const [listId, kind] of [["rooms", "room"], ["directs", "dm"]]) {
    const items = [...state.views.values()].filter((v) => v.kind === kind).map((view) => {
      const li = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = view.name;
      if (view === state.current) button.setAttribute("aria-current", "true");
      if (view.unread) {
        const badge = document.createElement("span");
        badge.className = "unread";
        badge.textContent = String(view.unread);
        badge.setAttribute("aria-label", `${view.unread} unread`);
        button.appendChild(badge);
      }
      button.onclick = () => { show(view); $("input").focus(); };
      li.appendChild(button);
      return li;
    });
    $(listId).replaceChildren(...items);
  }
}

function renderMembers() {
  const view = state.current;
  const names = view && view.kind === "room" ? [...view.members].sort((a, b) => fold(a) < fold(b) ? -1 : 1) : [];
  $("members-title").textContent = view && view.kind === "room" ? `Members (${names.length})` : "Members";
  $("members").replaceChildren(...names.map((name) => {
    const li = document.createElement("li");
    li.textContent = name;
    return li;
  }));
}

function rejoin() {
  const rooms = [...state.views.values()].filter((v) => v.kind === "room" && v.joined !== false);
  if (!rooms.length) { send("JOIN #general"); return; }
  for (const view of rooms) send(`JOIN ${view.name}${view.roomKey ? ` ${view.roomKey}` : ""}`);
}

// -- what the user types -------------------------------------------------------------

const HELP = [
  "text: a message to this room or person; //text sends /text",
  "/join ROOM [KEY], /part [REASON], /me TEXT, /dm NAME TEXT (or /msg), /nick NAME",
  "/topic TEXT, /quit [REASON]; any other /COMMAND ARGS is sent as the IRC command",
];

function submit(text) {
  const view = state.current;
  if (!text) return;
  if (text.startsWith("/") && !text.startsWith("//")) { command(text.slice(1)); return; }
  if (text.startsWith("//")) text = text.slice(1);
  if (!view) return;
  send(`PRIVMSG ${view.name} :${text}`);
}

function command(line) {
  const [word, ...rest] = line.split(" ");
  const args = rest.join(" ");
  const view = state.current;
  switch (word.toLowerCase()) {
    case "join": {
      const [room, key] = args.trim().split(/ +/);
      if (!room) return;
      const name = room.startsWith("#") ? room : `#${room}`;
      state.pendingSwitch = fold(name);
      const known = state.views.get(fold(name));
      if (known && known.joined) { show(known); return; }
      if (key) ensureView(name, "room").roomKey = key;  // for joining again after a reconnection
      send(`JOIN ${name}${key ? ` ${key}` : ""}`);
      return;
    }
    case "part": case "leave":
      if (view && view.kind === "room") send(`PART ${view.name}${args ? ` :${args}` : ""}`);
      return;
    case "me":
      if (view) send(`PRIVMSG ${view.name} :\x01ACTION ${args}\x01`);
      return;
    case "dm": case "msg": case "query": {
      const [name, ...words] = args.split(" ");
      if (!name) return;
      const dm = ensureView(name, "dm");
      if (words.length) send(`PRIVMSG ${name} :${words.join(" ")}`);
      show(dm);
      return;
    }
    case "topic":
      if (view && view.kind === "room") send(`TOPIC ${view.name}${args ? ` :${args}` : ""}`);
      return;
    case "quit":
      state.quitting = true;
      send(`QUIT :${args || "leaving"}`);
      return;
    case "help":
      if (view) for (const text of HELP) addLine(view, { cls: "info", text: `* ${text}` });
      return;
    default:
      send(`${word.toUpperCase()}${args ? ` ${args}` : ""}`);
  }
}

// -- the page ------------------------------------------------------------------------

$("login").addEventListener("submit", (event) => {
  event.preventDefault();
  state.nick = $("name").value.trim();
  state.password = $("password").value;
  state.quitting = false;
  $("login-error").textContent = "";
  if ("Notification" in window && Notification.permission === "default") Notification.requestPermission();
  connect();
});

$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = $("input");
  submit(input.value);
  input.value = "";
});

$("menu").addEventListener("click", () => $("chat").classList.toggle("menu-open"));

$("log").addEventListener("scroll", () => { if ($("log").scrollTop < 40) loadOlder(); });

document.addEventListener("keydown", (event) => {
  // Alt+Up / Alt+Down: the previous or next view, without a mouse.
  if (!event.altKey || (event.key !== "ArrowUp" && event.key !== "ArrowDown") || !state.current) return;
  const views = [...state.views.values()];
  const at = views.indexOf(state.current) + (event.key === "ArrowUp" ? -1 : 1);
  if (views[at]) { show(views[at]); event.preventDefault(); }
});
