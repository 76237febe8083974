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
  document.querySelectorAll("a[data-connect]").forEach(function (link) {
    link.addEventListener("click", function (event) {
      var popup = window.open(link.href, "airlock-connect", "width=640,height=760");
      if (!popup) {
        return; // blocked: follow the link in this window instead
      }
      event.preventDefault();
      var timer = window.setInterval(function () {
        if (popup.closed) {
          window.clearInterval(timer);
          window.location.reload();
        }
      }, 400);
    });
  });
  window.addEventListener("message", function (event) {
    if (event.origin === window.location.origin && event.data === "airlock:connected") {
      window.location.reload();
    }
  });
})();
