// The shown-once app key selects itself on focus, ready to copy (a file, not an inline handler: CSP).
document.querySelectorAll("input.once").forEach(function (input) {
  input.addEventListener("focus", function () { input.select(); });
});
