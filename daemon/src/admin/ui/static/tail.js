// The live tail: events from /ui/tail/stream (server-sent events), newest
// on top. Builds rows with textContent only: no HTML from the wire.
(function () {
  "use strict";
  var rows = document.getElementById("tail-rows");
  var status = document.getElementById("tail-status");
  if (!rows) { return; }
  var KEEP = 200;
  var source = new EventSource("/ui/tail/stream" + window.location.search);
  function cell(tr, text, cls) {
    var td = document.createElement("td");
    if (cls) {
      var span = document.createElement("span");
      span.className = "state " + cls;
      span.textContent = text;
      td.appendChild(span);
    } else {
      td.textContent = text;
    }
    tr.appendChild(td);
    return td;
  }
  source.addEventListener("open", function () { status.textContent = "live"; });
  source.addEventListener("error", function () {
    status.textContent = source.readyState === EventSource.CLOSED ? "stopped (sign in again)" : "reconnecting…";
  });
  source.addEventListener("event", function (m) {
    var e = JSON.parse(m.data);
    var tr = document.createElement("tr");
    tr.className = "arrived";
    cell(tr, e.received);
    cell(tr, e.source);
    cell(tr, e.type);
    cell(tr, e.state, e.state);
    cell(tr, String(e.jobs));
    cell(tr, String(e.jobs_dead));
    var a = document.createElement("a");
    a.href = "/ui/events/" + encodeURIComponent(e.id);
    a.textContent = e.id;
    cell(tr, "").appendChild(a);
    rows.insertBefore(tr, rows.firstChild);
    while (rows.children.length > KEEP) { rows.removeChild(rows.lastChild); }
  });
}());
