// merlin's live-rooms page (merlin/live_page.py, decision 0026): sign in, pick a room, post, edit, and
// see the room's messages arrive live from the read API's event stream.
// A file of its own, not an inline script, so the page's Content-Security-Policy can forbid those.
//
// Nothing is missed across a reload or a lost connection: the stream is opened first (resuming after
// the last position this tab saw, kept in sessionStorage), and once it is open the room's history is
// read; every message is kept once, by its id, at its highest version, in seq order. So whatever
// happened before the stream's start is in the history, and whatever happened after is in the stream.
(function () {
  "use strict";

  // sessionStorage: gone when the tab closes, never sent anywhere by the browser itself.
  var TOKEN_KEY = "merlin.live.token";
  var POSITION_KEY = "merlin.live.position:";
  var DEFAULT_ROOM = "lobby";
  var PAGE_SIZE = 200;
  // Waits before opening the stream again after it failed, growing with each failure in a row.
  var RETRY_MS = [250, 500, 1000, 2000, 5000];
  // A resume position refused this many times in a row is dropped (say, a log written anew since):
  // the history read after the stream opens still holds everything.
  var RESUME_ATTEMPTS = 3;
  var EVENTS = ["message.created", "message.updated"];

  var config = null;
  var token = null;
  var me = null;
  var room = null;
  var messages = new Map(); // message id -> the message at its highest version seen
  var items = new Map(); // message id -> its <li>
  var source = null;
  var session = 0; // a new room or a sign-out ends every older one's reads
  var attempt = 0; // a new connection of the stream ends every older one's
  var failures = 0;

  function $(id) {
    return document.getElementById(id);
  }

  var signIn = $("sign-in");
  var signedIn = $("signed-in");
  var chat = $("chat");
  var list = $("messages");
  var status = $("live-status");
  var noteLine = $("note");

  function note(text) {
    noteLine.textContent = text || "";
  }

  function setStatus(state, text) {
    status.dataset.state = state;
    status.textContent = text;
  }

  // --- calls -------------------------------------------------------------------------------------

  function randomKey() {
    if (window.crypto.randomUUID) {
      return window.crypto.randomUUID();
    }
    var bytes = window.crypto.getRandomValues(new Uint8Array(16));
    return Array.from(bytes, function (b) {
      return b.toString(16).padStart(2, "0");
    }).join("");
  }

  // The token goes in the Authorization header only: never in a URL, never as a cookie.
  function call(base, path, options) {
    options = options || {};
    var headers = { Authorization: "Bearer " + token };
    var init = { method: options.method || "GET", headers: headers, credentials: "omit", cache: "no-store" };
    if (options.json !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(options.json);
    }
    if (options.idempotent) {
      headers["Idempotency-Key"] = randomKey();
    }
    if (options.ifMatch !== undefined) {
      headers["If-Match"] = '"' + options.ifMatch + '"';
    }
    return window.fetch(base + path, init);
  }

  async function problemText(answer) {
    var text = String(answer.status);
    try {
      var problem = await answer.json();
      text += " " + (problem.title || "");
      if (problem.detail) {
        text += " " + problem.detail;
      }
    } catch (_) {
      // Not JSON: the status says enough.
    }
    return text;
  }

  function roomPath(suffix) {
    return "/v1/rooms/" + encodeURIComponent(room) + suffix;
  }

  // --- messages ----------------------------------------------------------------------------------

  function merge(message) {
    if (message.room_id !== room) {
      return;
    }
    var known = messages.get(message.message_id);
    if (known && known.version >= message.version) {
      return; // shown already, at this version or a later one
    }
    messages.set(message.message_id, message);
    render(message);
  }

  function part(item, name) {
    var found = item.querySelector(":scope > ." + name);
    if (!found) {
      found = document.createElement("span");
      found.className = name;
      item.appendChild(found);
    }
    return found;
  }

  function render(message) {
    var item = items.get(message.message_id);
    if (!item) {
      item = document.createElement("li");
      item.className = "message";
      item.dataset.messageId = message.message_id;
      items.set(message.message_id, item);
      place(item, message.seq);
    }
    item.dataset.seq = String(message.seq);
    item.dataset.version = String(message.version);
    part(item, "sender").textContent = message.sender_id;
    part(item, "body").textContent = message.body;
    part(item, "meta").textContent = "#" + message.seq + (message.version > 1 ? " · edited (v" + message.version + ")" : "");
    if (message.sender_id === me && !item.querySelector(":scope > .edit")) {
      var edit = document.createElement("button");
      edit.type = "button";
      edit.className = "edit";
      edit.textContent = "Edit";
      edit.addEventListener("click", function () {
        startEdit(item, message.message_id);
      });
      item.appendChild(edit);
    }
  }

  // In seq order: a room's seq is the order of creation, whatever order the messages arrive in.
  function place(item, seq) {
    var children = list.children;
    for (var i = 0; i < children.length; i++) {
      if (Number(children[i].dataset.seq) > seq) {
        list.insertBefore(item, children[i]);
        return;
      }
    }
    list.appendChild(item);
  }

  async function fetchMessage(messageId, position, current) {
    var answer = await call(
      config.read_api,
      roomPath("/messages/" + encodeURIComponent(messageId) + "?after_position=" + encodeURIComponent(position))
    );
    if (current !== session) {
      return;
    }
    if (answer.ok) {
      merge(await answer.json());
    } else if (answer.status !== 503) {
      // 503: the projection is behind; the stream brings the message when it is applied.
      note("Reading the message: " + (await problemText(answer)));
    }
  }

  async function loadHistory(current) {
    var path = roomPath("/messages?limit=" + PAGE_SIZE);
    while (path) {
      var answer = await call(config.read_api, path);
      if (current !== session) {
        return;
      }
      if (answer.status === 401) {
        signOut("The read API refused the token (401): sign in again.");
        return;
      }
      if (!answer.ok) {
        note("Reading the room: " + (await problemText(answer)));
        return;
      }
      var page = await answer.json();
      page.items.forEach(merge);
      path = page.next; // relative to the read API, null after the last page
    }
  }

  // --- the live stream ---------------------------------------------------------------------------

  function positionKey() {
    return POSITION_KEY + room;
  }

  // Positions of one room are on one partition ("<partition>-<offset>"): the later has the larger offset.
  function later(position, than) {
    var a = position.split("-");
    var b = than.split("-");
    return a[0] !== b[0] || BigInt(a[1]) > BigInt(b[1]);
  }

  function remember(position) {
    if (typeof position !== "string" || !/^\d+-\d+$/.test(position)) {
      return;
    }
    var kept = window.sessionStorage.getItem(positionKey());
    if (!kept || later(position, kept)) {
      window.sessionStorage.setItem(positionKey(), position);
    }
  }

  function closeStream() {
    if (source) {
      source.close();
      source = null;
    }
  }

  function retry(gen) {
    var wait = RETRY_MS[Math.min(failures, RETRY_MS.length - 1)];
    window.setTimeout(function () {
      if (gen === attempt) {
        connect();
      }
    }, wait);
  }

  // EventSource cannot send an Authorization header: a single-use ticket, asked for with the token,
  // opens each connection. A ticket cannot open a second one, so the browser's own reconnection
  // cannot either: every failure closes the stream and opens a new one here, with a new ticket.
  async function connect() {
    closeStream();
    var gen = ++attempt;
    var current = session;
    setStatus("connecting", "connecting…");
    var answer;
    try {
      answer = await call(config.read_api, "/v1/live/tickets", { method: "POST", json: { rooms: [room] } });
    } catch (_) {
      failures++;
      setStatus("closed", "not live: the read API does not answer");
      retry(gen);
      return;
    }
    if (gen !== attempt) {
      return;
    }
    if (answer.status === 401) {
      signOut("The read API refused the token (401): sign in again.");
      return;
    }
    if (answer.status === 404 || answer.status === 405) {
      setStatus("closed", "not live: this read API has no live routes");
      await loadHistory(current);
      return;
    }
    if (!answer.ok) {
      failures++;
      setStatus("closed", "not live: " + (await problemText(answer)));
      retry(gen);
      return;
    }
    var ticket = (await answer.json()).ticket;
    if (gen !== attempt) {
      return;
    }
    var query = new URLSearchParams({ ticket: ticket });
    var after = window.sessionStorage.getItem(positionKey());
    if (after && failures >= RESUME_ATTEMPTS) {
      window.sessionStorage.removeItem(positionKey());
      after = null;
    }
    if (after) {
      query.set("after_position", after);
    }
    var opened = false;
    var stream = new window.EventSource(config.read_api + roomPath("/live?" + query.toString()));
    source = stream;
    stream.onopen = function () {
      if (gen !== attempt) {
        return;
      }
      opened = true;
      failures = 0;
      setStatus("live", "live");
      loadHistory(current);
    };
    EVENTS.forEach(function (name) {
      stream.addEventListener(name, function (event) {
        if (gen !== attempt) {
          return;
        }
        var message;
        try {
          message = JSON.parse(event.data);
        } catch (_) {
          return;
        }
        merge(message);
        remember(message.position || event.lastEventId);
      });
    });
    // The stream ends after each of these: behind by a whole buffer (resume from the last position),
    // the log no longer holding that position (read the room anew), or the token expired.
    stream.addEventListener("lagged", function () {
      stream.close();
      if (gen === attempt) {
        connect();
      }
    });
    stream.addEventListener("reload", function () {
      stream.close();
      if (gen === attempt) {
        window.sessionStorage.removeItem(positionKey());
        openRoom(room);
      }
    });
    stream.addEventListener("expired", function () {
      stream.close();
      if (gen === attempt) {
        signOut("The token expired: sign in again.");
      }
    });
    stream.onerror = function () {
      stream.close();
      if (gen !== attempt) {
        return;
      }
      if (!opened) {
        failures++;
      }
      setStatus("connecting", "reconnecting…");
      retry(gen);
    };
  }

  // --- posting and editing -----------------------------------------------------------------------

  $("post-form").addEventListener("submit", async function (event) {
    event.preventDefault();
    var input = $("post-input");
    var button = event.target.querySelector("button");
    var body = input.value;
    var current = session;
    button.disabled = true;
    try {
      var answer = await call(config.write_api, roomPath("/messages"), {
        method: "POST",
        json: { body: body },
        idempotent: true,
      });
      if (answer.status === 202) {
        input.value = "";
        note("");
        var written = await answer.json();
        // Read-your-writes: shown at once, stream or not.
        await fetchMessage(written.message_id, written.position, current);
      } else if (answer.status === 401) {
        signOut("The write API refused the token (401): sign in again.");
      } else {
        note("Posting: " + (await problemText(answer)));
      }
    } catch (_) {
      note("Posting: the write API does not answer.");
    } finally {
      button.disabled = false;
      input.focus();
    }
  });

  function startEdit(item, messageId) {
    if (item.querySelector(":scope > form")) {
      return;
    }
    // The version being edited: a later one arriving meanwhile makes the edit a conflict, not a loss.
    var editing = messages.get(messageId);
    var form = document.createElement("form");
    form.className = "edit-form";
    var input = document.createElement("input");
    input.value = editing.body;
    input.required = true;
    input.setAttribute("aria-label", "New text");
    var save = document.createElement("button");
    save.type = "submit";
    save.textContent = "Save";
    var cancel = document.createElement("button");
    cancel.type = "button";
    cancel.textContent = "Cancel";
    cancel.addEventListener("click", function () {
      form.remove();
    });
    form.append(input, save, cancel);
    form.addEventListener("submit", async function (event) {
      event.preventDefault();
      var current = session;
      save.disabled = true;
      try {
        var answer = await call(config.write_api, roomPath("/messages/" + encodeURIComponent(messageId)), {
          method: "PATCH",
          json: { body: input.value },
          ifMatch: editing.version,
          idempotent: true,
        });
        if (answer.status !== 202) {
          note("Editing: " + (await problemText(answer)));
          return;
        }
        var written = await answer.json();
        form.remove();
        note("");
        var outcome = await call(
          config.read_api,
          "/v1/events/" + encodeURIComponent(written.event_id) + "?after_position=" + encodeURIComponent(written.position)
        );
        if (outcome.ok) {
          var found = await outcome.json();
          if (found.status === "rejected" && found.rejection) {
            note("The edit was not applied: " + found.rejection.reason);
          }
        }
        await fetchMessage(messageId, written.position, current);
      } catch (_) {
        note("Editing: the write API does not answer.");
      } finally {
        save.disabled = false;
      }
    });
    item.appendChild(form);
    input.focus();
  }

  // --- rooms and signing in ----------------------------------------------------------------------

  function roomFromUrl() {
    var given = new URLSearchParams(window.location.search).get("room");
    return given && /^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$/.test(given) ? given : DEFAULT_ROOM;
  }

  function openRoom(name) {
    session++;
    room = name;
    messages = new Map();
    items = new Map();
    list.replaceChildren();
    $("room-input").value = name;
    $("room-name").textContent = name;
    // The room is in the URL (a reload or a link keeps it); the token never is.
    var url = new URL(window.location.href);
    url.searchParams.set("room", name);
    window.history.replaceState(null, "", url.pathname + url.search);
    failures = 0;
    connect();
  }

  $("room-form").addEventListener("submit", function (event) {
    event.preventDefault();
    var input = $("room-input");
    if (input.checkValidity()) {
      openRoom(input.value);
    }
  });

  // The token's subject, to offer editing of one's own messages; the APIs check every call anyway.
  function subjectOf(jwt) {
    try {
      var payload = jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      while (payload.length % 4) {
        payload += "=";
      }
      return JSON.parse(window.atob(payload)).sub || null;
    } catch (_) {
      return null;
    }
  }

  function showSignIn(text) {
    chat.hidden = true;
    signedIn.hidden = true;
    signIn.hidden = false;
    note(text);
    $("token-input").value = "";
  }

  function signOut(text) {
    session++;
    attempt++;
    closeStream();
    token = null;
    me = null;
    window.sessionStorage.removeItem(TOKEN_KEY);
    setStatus("closed", "not live");
    showSignIn(text || "");
  }

  function enter(given) {
    token = given;
    me = subjectOf(given);
    window.sessionStorage.setItem(TOKEN_KEY, given);
    $("me").textContent = me || "(a token without a subject)";
    signIn.hidden = true;
    signedIn.hidden = false;
    chat.hidden = false;
    note("");
    openRoom(room || roomFromUrl());
  }

  $("sign-out").addEventListener("click", function () {
    signOut("");
  });

  $("token-form").addEventListener("submit", function (event) {
    event.preventDefault();
    var pasted = $("token-input").value.trim().replace(/^Bearer\s+/i, "");
    if (pasted) {
      enter(pasted);
    }
  });

  // merlin dev's users: their tokens come from this page's server, which hands them to this machine only.
  Array.prototype.forEach.call(document.querySelectorAll(".dev-user"), function (button) {
    button.addEventListener("click", async function () {
      var answer = await window.fetch("/dev/tokens/" + encodeURIComponent(button.dataset.user), {
        method: "POST",
        cache: "no-store",
      });
      if (!answer.ok) {
        note("No development token for " + button.dataset.user + " (" + answer.status + ").");
        return;
      }
      enter((await answer.json()).token);
    });
  });

  window.addEventListener("pagehide", closeStream);

  async function start() {
    var answer = await window.fetch("/config.json", { cache: "no-store" });
    config = await answer.json();
    room = roomFromUrl();
    var offered = config.dev_users || [];
    Array.prototype.forEach.call(document.querySelectorAll(".dev-user"), function (button) {
      button.hidden = offered.indexOf(button.dataset.user) < 0;
    });
    $("dev-users").hidden = offered.length === 0;
    var kept = window.sessionStorage.getItem(TOKEN_KEY);
    if (kept) {
      enter(kept);
    } else {
      showSignIn("");
    }
  }

  start().catch(function (error) {
    note("The page could not start: " + error);
  });
})();
