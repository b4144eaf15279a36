// Threshold sliders on the backtest view: show the share of uploads a policy would match at
// the slider's threshold (from the backtest's sweep), and copy it into the draft on "use".
document.querySelectorAll("input[type=range][data-sweep]").forEach(function (slider) {
  var sweep = JSON.parse(slider.dataset.sweep);
  var out = slider.parentNode.querySelector("output");
  function show() {
    var t = parseFloat(slider.value), best = sweep[0];
    sweep.forEach(function (p) { if (Math.abs(p[0] - t) < Math.abs(best[0] - t)) best = p; });
    out.textContent = best[0].toFixed(2) + " → " + (100 * best[1]).toFixed(1) + "% of uploads";
  }
  slider.addEventListener("input", show);
  show();
  slider.parentNode.querySelector("button.use").addEventListener("click", function () {
    var field = document.getElementById(slider.dataset.target);
    if (!field) return;
    field.value = parseFloat(slider.value).toFixed(2);
    field.closest("details").open = true;
    field.classList.add("changed");
    field.scrollIntoView({block: "center"});
  });
});
