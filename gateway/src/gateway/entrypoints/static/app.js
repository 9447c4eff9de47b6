// Interchange in the browser: sign in, orders over the gateway's REST API,
// notifications live over Server-Sent Events, rooms over a WebSocket.
//
// EventSource and WebSocket cannot send an Authorization header, so each connection
// first asks for a single-use ticket (POST /api/auth/ticket) and passes that in the
// URL; the access token itself never appears in a URL. A ticket works once, so a
// reconnect asks for a new one and resumes the event stream from the last event id.

const $ = (selector) => document.querySelector(selector);
const TOKEN_KEY = "interchange.token";
const PING_SECONDS = 25;

const state = {
  token: sessionStorage.getItem(TOKEN_KEY),
  me: null,
  clientId: null,
  lastEventId: null,
  events: null,
  socket: null,
  rooms: new Set(),
  currentRoom: null,
  seen: new Set(),
  retries: { events: 0, chat: 0 },
  timers: { events: null, chat: null, ping: null },
};

class Problem extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

async function api(path, { method = "GET", body, headers = {} } = {}) {
  const init = { method, headers: { ...headers } };
  if (state.token) init.headers.authorization = `Bearer ${state.token}`;
  if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (!response.ok) {
    if (response.status === 401 && state.token) signOut("Your session ended: log in again.");
    throw new Problem(response.status, (data && (data.detail || data.title)) || response.statusText);
  }
  return data;
}

function say(text, kind = "info") {
  const box = $("#message");
  box.textContent = text;
  box.dataset.kind = kind;
  box.hidden = !text;
}

function guarded(handler) {
  return async (event) => {
    event.preventDefault();
    try {
      say("");
      await handler(event);
    } catch (error) {
      say(error.message || String(error), "error");
    }
  };
}

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "text") node.textContent = value;
    else node.setAttribute(name, value);
  }
  node.append(...children);
  return node;
}

function backoff(kind) {
  const attempt = Math.min(state.retries[kind]++, 5);
  return Math.min(30_000, 1000 * 2 ** attempt) * (0.5 + Math.random() / 2);
}

// Signing in and out

async function logIn(email, password) {
  const answer = await api("/api/auth/token", { method: "POST", body: { email, password } });
  state.token = answer.access_token;
  sessionStorage.setItem(TOKEN_KEY, state.token);
  await start();
}

function signOut(reason) {
  state.token = null;
  state.me = null;
  sessionStorage.removeItem(TOKEN_KEY);
  for (const timer of Object.values(state.timers)) clearTimeout(timer);
  if (state.events) state.events.close();
  if (state.socket) state.socket.close(1000, "signed out");
  state.events = state.socket = null;
  state.rooms.clear();
  state.seen.clear();
  state.lastEventId = null;
  $("#signed-in").hidden = true;
  $("#who").hidden = true;
  $("#signed-out").hidden = false;
  setLive("events", "off");
  setLive("chat", "off");
  if (reason) say(reason);
}

async function start() {
  state.me = await api("/api/users/me");
  $("#who-name").textContent = `${state.me.name} · ${state.me.id}`;
  $("#who").hidden = false;
  $("#signed-out").hidden = true;
  $("#signed-in").hidden = false;
  await Promise.all([loadOrders(), loadNotifications()]);
  connectEvents();
  connectChat();
}

// Orders

async function loadOrders() {
  const page = await api("/api/orders?limit=10");
  const rows = page.items.map((order) => {
    const cancel = element("button", { type: "button", class: "secondary", text: "Cancel" });
    cancel.disabled = order.status !== "PLACED" && order.status !== "CONFIRMED";
    cancel.addEventListener("click", guarded(() => cancelOrder(order)));
    const items = order.items.map((item) => `${item.quantity} × ${item.sku}`).join(", ");
    return element(
      "tr",
      { "data-order": order.id },
      element("td", { class: "id", text: order.id.slice(0, 8) }),
      element("td", { text: items }),
      element("td", { text: `${order.total} ${order.currency}` }),
      element("td", {}, element("span", { class: "status", "data-status": order.status, text: order.status })),
      element("td", {}, cancel),
    );
  });
  $("#orders").replaceChildren(...rows);
  $("#orders-empty").hidden = rows.length > 0;
}

async function placeOrder(form) {
  const data = new FormData(form);
  await api("/api/orders", {
    method: "POST",
    headers: { "idempotency-key": crypto.randomUUID() },
    body: {
      items: [{ sku: data.get("sku"), quantity: Number(data.get("quantity")), unit_price: data.get("unit_price") }],
    },
  });
  await loadOrders();
}

async function cancelOrder(order) {
  await api(`/api/orders/${order.id}/cancel`, {
    method: "POST",
    headers: { "if-match": `"${order.version}"` },
    body: { reason: "cancelled in the browser" },
  });
  await loadOrders();
}

// Notifications: the list, then Server-Sent Events

function showNotification(notification, { fresh }) {
  if (state.seen.has(notification.id)) return;
  state.seen.add(notification.id);
  const item = element(
    "li",
    { "data-notification": notification.id, "data-type": notification.type },
    element("span", { class: "title", text: notification.title }),
    element("span", { class: "body", text: notification.body }),
    element("time", { datetime: notification.created_at, text: new Date(notification.created_at).toLocaleString() }),
  );
  if (fresh) {
    item.classList.add("fresh");
    $("#notifications").prepend(item);
  } else {
    $("#notifications").append(item);
  }
  $("#notifications-empty").hidden = true;
}

async function loadNotifications() {
  const page = await api("/api/notifications?limit=10");
  for (const notification of page.items) showNotification(notification, { fresh: false });
}

async function ticket() {
  const answer = await api("/api/auth/ticket", { method: "POST" });
  return answer.ticket;
}

function setLive(kind, value) {
  $(`#${kind}-state`).dataset.state = value;
}

async function connectEvents() {
  if (!state.token) return;
  setLive("events", "connecting");
  let url;
  try {
    url = `/api/events?ticket=${encodeURIComponent(await ticket())}`;
  } catch {
    state.timers.events = setTimeout(connectEvents, backoff("events"));
    return;
  }
  if (state.lastEventId) url += `&last_event_id=${encodeURIComponent(state.lastEventId)}`;
  const events = new EventSource(url);
  state.events = events;
  events.onopen = () => {
    state.retries.events = 0;
    setLive("events", "on");
  };
  events.addEventListener("notification", (message) => {
    state.lastEventId = message.lastEventId;
    showNotification(JSON.parse(message.data), { fresh: true });
    loadOrders().catch(() => {});
  });
  // The browser would retry with the same, already used ticket: reconnect ourselves.
  events.onerror = () => {
    events.close();
    if (state.events !== events || !state.token) return;
    setLive("events", "connecting");
    state.timers.events = setTimeout(connectEvents, backoff("events"));
  };
}

// Rooms over a WebSocket

function chatLine(kind, where, from, text) {
  const line = element("li", { class: kind });
  if (where) line.append(element("span", { class: "where", text: where }));
  if (from) line.append(element("span", { class: "from", text: from }));
  line.append(text);
  $("#chat").append(line);
  line.scrollIntoView({ block: "nearest" });
}

function nameOf(userId) {
  return state.me && userId === state.me.id ? "you" : userId.slice(0, 8);
}

function renderRooms() {
  const chips = [...state.rooms].map((room) => {
    const chip = element("span", { class: "room", role: "button", "aria-pressed": String(room === state.currentRoom) });
    chip.append(`#${room}`);
    const leave = element("button", { type: "button", class: "link", title: `Leave ${room}`, text: "×" });
    leave.addEventListener("click", (event) => {
      event.stopPropagation();
      send({ type: "leave_room", room });
    });
    chip.append(leave);
    chip.addEventListener("click", () => {
      state.currentRoom = room;
      renderRooms();
    });
    return chip;
  });
  $("#rooms").replaceChildren(...chips);
  $("#say-form button").disabled = !state.currentRoom;
}

function send(message) {
  if (!state.socket || state.socket.readyState !== WebSocket.OPEN) throw new Error("The chat is reconnecting.");
  state.socket.send(JSON.stringify(message));
}

const handlers = {
  welcome({ clientId }) {
    state.clientId = clientId;
    state.retries.chat = 0;
    setLive("chat", "on");
    for (const room of state.rooms) send({ type: "join_room", room });
  },
  user_joined({ room, userId, clientId }) {
    if (clientId === state.clientId) {
      state.rooms.add(room);
      state.currentRoom = state.currentRoom || room;
      renderRooms();
    }
    chatLine("system", `#${room}`, null, `${nameOf(userId)} joined`);
  },
  user_left({ room, userId, clientId }) {
    if (clientId === state.clientId) {
      state.rooms.delete(room);
      if (state.currentRoom === room) state.currentRoom = [...state.rooms][0] || null;
      renderRooms();
    }
    chatLine("system", `#${room}`, null, `${nameOf(userId)} left`);
  },
  room_message({ room, from, message }) {
    chatLine("said", `#${room}`, nameOf(from), message);
  },
  private_message({ from, message }) {
    chatLine("private", "private", nameOf(from), message);
  },
  notification() {},
  pong() {},
  error({ detail }) {
    say(detail, "error");
  },
};

async function connectChat() {
  if (!state.token) return;
  setLive("chat", "connecting");
  let url;
  try {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    url = `${scheme}://${location.host}/ws?ticket=${encodeURIComponent(await ticket())}`;
  } catch {
    state.timers.chat = setTimeout(connectChat, backoff("chat"));
    return;
  }
  const socket = new WebSocket(url);
  state.socket = socket;
  socket.onmessage = (event) => {
    const message = JSON.parse(event.data);
    (handlers[message.type] || (() => {}))(message);
  };
  clearInterval(state.timers.ping);
  state.timers.ping = setInterval(() => {
    if (socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({ type: "ping" }));
  }, PING_SECONDS * 1000);
  socket.onclose = (event) => {
    if (state.socket !== socket || !state.token) return;
    setLive("chat", "connecting");
    if (event.code === 1008 && event.reason === "token expired") {
      signOut("Your session ended: log in again.");
      return;
    }
    state.timers.chat = setTimeout(connectChat, backoff("chat"));
  };
}

// Wiring

$("#login-form").addEventListener(
  "submit",
  guarded(async (event) => {
    const data = new FormData(event.target);
    await logIn(data.get("email"), data.get("password"));
  }),
);

$("#register-form").addEventListener(
  "submit",
  guarded(async (event) => {
    const data = new FormData(event.target);
    await api("/api/auth/register", {
      method: "POST",
      body: { name: data.get("name"), email: data.get("email"), password: data.get("password") },
    });
    await logIn(data.get("email"), data.get("password"));
  }),
);

$("#order-form").addEventListener("submit", guarded((event) => placeOrder(event.target)));

$("#join-form").addEventListener(
  "submit",
  guarded(async (event) => {
    const room = new FormData(event.target).get("room");
    send({ type: "join_room", room });
    state.currentRoom = room;
  }),
);

$("#say-form").addEventListener(
  "submit",
  guarded(async (event) => {
    const input = event.target.elements.message;
    send({ type: "room_message", room: state.currentRoom, message: input.value });
    input.value = "";
  }),
);

$("#private-form").addEventListener(
  "submit",
  guarded(async (event) => {
    const { target, message } = event.target.elements;
    send({ type: "private_message", targetUserId: target.value.trim(), message: message.value });
    chatLine("private", `to ${target.value.trim().slice(0, 8)}`, "you", message.value);
    message.value = "";
  }),
);

$("#sign-out").addEventListener("click", () => signOut("Signed out."));

renderRooms();
if (state.token) start().catch(() => signOut());
