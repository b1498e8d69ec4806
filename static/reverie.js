/* Reverie: keyboard shortcuts, diff expansion, raw JSON toggle. Small and framework-free. */
(function () {
  "use strict";

  // Inline handlers are blocked by the Content Security Policy: wire behaviours here.
  document.addEventListener("change", function (event) {
    var el = event.target;
    if (el && el.matches && el.matches("select[data-autosubmit]") && el.form) el.form.submit();
  });

  function typing(event) {
    var el = event.target;
    return el && (el.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(el.tagName));
  }

  function rows() { return Array.prototype.slice.call(document.querySelectorAll("[data-keynav] .queue-row")); }

  function select(delta) {
    var list = rows();
    if (!list.length) return;
    var current = list.findIndex(function (r) { return r.classList.contains("selected"); });
    var next = current < 0 ? 0 : Math.min(list.length - 1, Math.max(0, current + delta));
    list.forEach(function (r) { r.classList.remove("selected"); r.removeAttribute("aria-selected"); });
    list[next].classList.add("selected");
    list[next].setAttribute("aria-selected", "true");
    list[next].scrollIntoView({ block: "nearest" });
  }

  function openSelected() {
    var row = document.querySelector("[data-keynav] .queue-row.selected");
    if (row) window.location.href = row.dataset.href;
  }

  function focusComment(action) {
    var box = document.getElementById("decision-comment");
    if (!box) return;
    box.focus();
    box.dataset.intent = action;
    box.scrollIntoView({ block: "center" });
  }

  document.addEventListener("keydown", function (event) {
    if (event.metaKey || event.ctrlKey || event.altKey) {
      // Ctrl/Cmd+Enter in the comment box submits the intended decision (reject / request changes).
      var box = event.target;
      if (event.key === "Enter" && box && box.id === "decision-comment" && box.dataset.intent) {
        var button = document.getElementById(box.dataset.intent === "reject" ? "reject-button" : "changes-button");
        if (button) { event.preventDefault(); button.click(); }
      }
      return;
    }
    if (typing(event)) return;
    var open = document.querySelector("dialog[open]");
    if (open) return;
    switch (event.key) {
      case "j": case "k": {
        // In the queue: move the selection. On a proposal: go to the next / previous one.
        var link = document.getElementById(event.key === "j" ? "queue-next" : "queue-prev");
        if (link && !rows().length) { window.location.href = link.href; break; }
        select(event.key === "j" ? 1 : -1);
        break;
      }
      case "o": case "Enter":
        if (document.querySelector("[data-keynav] .queue-row.selected")) { event.preventDefault(); openSelected(); }
        break;
      case "a": {
        var approve = document.getElementById("approve-button");
        var dialog = document.getElementById("approve-dialog");
        if (approve && !approve.disabled && dialog) { event.preventDefault(); dialog.showModal(); }
        break;
      }
      case "r": if (document.getElementById("reject-button")) { event.preventDefault(); focusComment("reject"); } break;
      case "c": if (document.getElementById("changes-button")) { event.preventDefault(); focusComment("request_changes"); } break;
      case "u": if (document.body.dataset.page === "proposal") window.location.href = "/"; break;
      case "?": event.preventDefault(); document.getElementById("help").showModal(); break;
      default: return;
    }
  });

  // A comment on a diff line or hunk: one form (a <template>) placed under the row clicked.
  function openLineComment(button) {
    var template = document.getElementById("line-comment-form");
    if (!template) return;
    var row = button.closest("tr");
    var table = button.closest("table");
    document.querySelectorAll(".comment-form-row").forEach(function (r) { r.remove(); });
    var fresh = template.content.firstElementChild.cloneNode(true);
    fresh.querySelector("td").colSpan = table.classList.contains("diff-split") ? 4 : 3;
    var line = button.dataset.line;
    fresh.querySelector("[name=document]").value = button.dataset.document;
    fresh.querySelector("[name=line]").value = line;
    var cell = button.closest("td.code");
    var quote = "";
    if (cell) {
      var copy = cell.cloneNode(true);
      copy.querySelectorAll("button, .marker, .move-note, .pill").forEach(function (el) { el.remove(); });
      quote = copy.textContent.trim();
    }
    fresh.querySelector("[name=quote]").value = quote;
    var where = line.charAt(0) === "H" ? "this change" : "line " + line.slice(1) + (line.charAt(0) === "L" ? " (old)" : "");
    fresh.querySelector(".line-comment-label").textContent = button.dataset.document + ", " + where;
    row.parentNode.insertBefore(fresh, row.nextSibling);
    fresh.querySelector("textarea").focus();
  }

  document.addEventListener("click", function (event) {
    var target = event.target;
    if (target.closest("[data-help-open]")) { document.getElementById("help").showModal(); return; }
    var expand = target.closest("[data-expand]");
    if (expand) {
      var tbody = expand.closest("tbody");
      var hidden = tbody.nextElementSibling;
      if (hidden) hidden.hidden = false;
      tbody.remove();
      return;
    }
    var opener = target.closest("[data-comment-open]");
    if (opener) { openLineComment(opener); return; }
    if (target.closest("[data-comment-cancel]")) {
      var open = target.closest(".comment-form-row");
      if (open) open.remove();
      return;
    }
    var toggle = target.closest("[data-toggle]");
    if (toggle) {
      var panel = document.getElementById(toggle.dataset.toggle);
      panel.hidden = !panel.hidden;
      toggle.setAttribute("aria-expanded", String(!panel.hidden));
      return;
    }
    var scroll = target.closest("[data-scroll-to]");
    if (scroll) {
      var section = document.getElementById(scroll.dataset.scrollTo);
      if (section) section.scrollIntoView({ behavior: "smooth", block: "start" });
    }
    // A click anywhere on a queue row (not on a link) opens it.
    var row = target.closest(".queue-row");
    if (row && !target.closest("a, button, input, select")) window.location.href = row.dataset.href;
  });
})();
