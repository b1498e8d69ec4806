// The admin's "Test connection" button beside an agent's environment URL: posts the URL as typed
// to the probe and shows its answer (an HTML fragment, escaped by the server) under the field.
document.addEventListener("click", function (event) {
  var button = event.target.closest("[data-environment-check]");
  if (!button) return;
  var wrap = button.closest(".environment-url");
  var input = wrap.querySelector("input");
  var out = wrap.nextElementSibling;
  var token = document.querySelector("input[name=csrfmiddlewaretoken]");
  var body = new FormData();
  body.append("environment_url", input.value);
  body.append("agent", button.dataset.agent || "");
  button.disabled = true;
  out.textContent = "Connecting…";
  fetch(button.dataset.environmentCheck, {
    method: "POST",
    body: body,
    headers: { "X-CSRFToken": token ? token.value : "" },
    credentials: "same-origin",
  })
    .then(function (response) { return response.text(); })
    .then(function (html) { out.innerHTML = html; })
    .catch(function (error) { out.textContent = "The test could not run: " + error; })
    .finally(function () { button.disabled = false; });
});
