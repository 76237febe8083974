// airlock console: Connect opens the provider in a popup; the page reloads
// when the popup reports success or is closed. The callback page uses this
// same file to tell its opener and close itself.
(function () {
  "use strict";
  if (document.body.dataset.callback === "connected") {
    if (window.opener) {
      window.opener.postMessage("airlock:connected", window.location.origin);
      window.close();
    }
    return;
  }
  // A connect form's answer: on to the provider. Forms may only post to this
  // origin (CSP form-action), so the page, not a redirect, goes on.
  var onward = document.querySelector("a[data-continue]");
  if (onward) {
    window.location.replace(onward.href);
    return;
  }
  var watch = function (popup) {
    var timer = window.setInterval(function () {
      if (popup.closed) {
        window.clearInterval(timer);
        window.location.reload();
      }
    }, 400);
  };
  document.querySelectorAll("a[data-connect]").forEach(function (link) {
    link.addEventListener("click", function (event) {
      var popup = window.open(link.href, "airlock-connect", "width=640,height=760");
      if (!popup) {
        return; // blocked: follow the link in this window instead
      }
      event.preventDefault();
      watch(popup);
    });
  });
  // Connect and re-authorize forms post into the popup window.
  document.querySelectorAll("form[data-connect-form]").forEach(function (form) {
    form.addEventListener("submit", function () {
      var popup = window.open("", "airlock-connect", "width=640,height=760");
      if (!popup) {
        form.removeAttribute("target"); // blocked: continue in this window
        return;
      }
      watch(popup);
    });
  });
  // The connect form's scopes start as the chosen provider's defaults.
  document.querySelectorAll("select[data-scopes-for]").forEach(function (select) {
    var scopes = document.getElementById(select.dataset.scopesFor);
    select.addEventListener("change", function () {
      var option = select.options[select.selectedIndex];
      if (scopes && option) {
        scopes.value = option.dataset.scopes || "";
      }
    });
  });
  window.addEventListener("message", function (event) {
    if (event.origin === window.location.origin && event.data === "airlock:connected") {
      window.location.reload();
    }
  });
})();
