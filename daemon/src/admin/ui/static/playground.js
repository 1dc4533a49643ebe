// The playground's checks as you type: the rule's text is sent to
// /ui/rules/check a moment after the last key, and the reads of event
// fields its types cannot have are listed. textContent only.
(function () {
  "use strict";
  var form = document.querySelector("form.playground");
  var list = document.getElementById("checks");
  if (!form || !list) { return; }
  var text = form.querySelector("textarea[name=text]");
  var rule = form.querySelector("input[name=rule]");
  var csrf = form.querySelector("input[name=csrf]");
  var timer = null;
  var asked = 0;
  function show(checks) {
    while (list.firstChild) { list.removeChild(list.firstChild); }
    checks.forEach(function (c) {
      var li = document.createElement("li");
      li.textContent = c;
      list.appendChild(li);
    });
  }
  function check() {
    var n = ++asked;
    var body = new URLSearchParams();
    body.set("csrf", csrf.value);
    body.set("rule", rule.value);
    body.set("text", text.value);
    fetch("/ui/rules/check", { method: "POST", body: body, credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (answer) {
        if (answer && n === asked) { show(answer.checks || []); }
      })
      .catch(function () {});
  }
  text.addEventListener("input", function () {
    clearTimeout(timer);
    timer = setTimeout(check, 300);
  });
}());
