// merlin's API explorer (kernel/http/explorer.py, decision 0023): asks for a bearer token, keeps it
// for this tab only, loads the OpenAPI document with it and authorizes Swagger UI with it.
// A file of its own, not an inline script, so the page's Content-Security-Policy can forbid those.
(function () {
  "use strict";

  // sessionStorage: gone when the tab closes, never sent anywhere by the browser itself.
  var TOKEN_KEY = "merlin.explorer.token";
  var REFUSED_KEY = "merlin.explorer.refused";
  // The bearer scheme of merlin's OpenAPI documents.
  var SCHEME = "bearerAuth";

  var specUrl = new URL(document.body.dataset.openapiUrl, window.location.href).href;
  var form = document.getElementById("token-form");
  var input = document.getElementById("token-input");
  var formNote = document.getElementById("token-note");
  var held = document.getElementById("token-held");
  var heldNote = document.getElementById("held-note");
  var container = document.getElementById("swagger-ui");

  function ask(note) {
    held.hidden = true;
    container.hidden = true;
    form.hidden = false;
    formNote.textContent = note || "";
    input.focus();
  }

  function forget(note) {
    window.sessionStorage.removeItem(TOKEN_KEY);
    if (note) {
      window.sessionStorage.setItem(REFUSED_KEY, note);
    }
    // A fresh page drops Swagger UI and every copy of the token it holds.
    window.location.reload();
  }

  function hasScheme(ui) {
    var schemes = ui.specSelectors.securityDefinitions();
    return Boolean(schemes && schemes.get(SCHEME));
  }

  function open(token) {
    form.hidden = true;
    held.hidden = false;
    container.hidden = false;
    if (typeof window.SwaggerUIBundle !== "function") {
      heldNote.textContent = "Swagger UI did not load: see the browser's console.";
      return;
    }
    var ui = window.SwaggerUIBundle({
      url: specUrl,
      dom_id: "#swagger-ui",
      // Nothing leaves this origin: no validator badge, no authorization kept in localStorage.
      validatorUrl: null,
      persistAuthorization: false,
      deepLinking: false,
      // The token goes with the document's request only; "Try it out" sends what "Authorize" holds.
      requestInterceptor: function (request) {
        if (request.loadSpec) {
          request.headers.Authorization = "Bearer " + token;
        }
        return request;
      },
      responseInterceptor: function (response) {
        if (response.url === specUrl && (response.status === 401 || response.status === 403)) {
          forget("The service refused that token (" + response.status + "): paste another.");
        }
        return response;
      },
      onComplete: function () {
        if (hasScheme(ui)) {
          ui.preauthorizeApiKey(SCHEME, token);
        } else {
          heldNote.textContent = "This document names no " + SCHEME + " scheme: Try it out sends no token.";
        }
      },
    });
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var token = input.value.trim().replace(/^bearer\s+/i, "");
    input.value = "";
    if (!token) {
      ask("Paste a token: merlin token SUBJECT prints one.");
      return;
    }
    window.sessionStorage.setItem(TOKEN_KEY, token);
    window.sessionStorage.removeItem(REFUSED_KEY);
    open(token);
  });
  document.getElementById("token-forget").addEventListener("click", function () {
    forget(null);
  });

  var refused = window.sessionStorage.getItem(REFUSED_KEY);
  window.sessionStorage.removeItem(REFUSED_KEY);
  var kept = window.sessionStorage.getItem(TOKEN_KEY);
  if (kept) {
    open(kept);
  } else {
    ask(refused);
  }
})();
