// Follows a running update: polls its events after the last one shown (any replica answers
// from the database), appends them as the CLI prints them, and reloads once it has ended so
// the page shows the final summary. Text only (textContent): event messages are not HTML.
(function () {
  "use strict";
  var pre = document.getElementById("events");
  if (!pre || pre.dataset.live !== "true") return;
  var after = pre.dataset.after || "0";
  var url = pre.dataset.url;

  function append(line) {
    var div = document.createElement("div");
    div.className = "ev ev-" + line.kind;
    var sym = document.createElement("span");
    sym.className = "sym";
    sym.textContent = (line.symbol + "  ").slice(0, 2);
    div.appendChild(sym);
    div.appendChild(document.createTextNode(" " + line.text));
    pre.appendChild(div);
  }

  function poll() {
    fetch(url + "?after=" + encodeURIComponent(after), { credentials: "same-origin" })
      .then(function (r) { if (!r.ok) throw new Error(r.status); return r.json(); })
      .then(function (body) {
        body.lines.forEach(append);
        after = String(body.after);
        document.getElementById("status").textContent = body.status;
        if (body.done) { window.location.reload(); return; }
        setTimeout(poll, 1000);
      })
      .catch(function () { setTimeout(poll, 3000); });
  }
  setTimeout(poll, 1000);
})();
