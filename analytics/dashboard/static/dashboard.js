// The dashboard's behaviour: draw the plots the server computed, submit the
// filters when they change, sort the at-risk list, and reload when a new
// snapshot replaces the database.
"use strict";

function drawCharts() {
  const charts = Array.from(document.querySelectorAll(".chart[data-figure]"));
  const drawn = charts.map((element) => {
    const figure = JSON.parse(element.dataset.figure);
    const config = {
      responsive: true,
      displaylogo: false,
      modeBarButtonsToRemove: ["select2d", "lasso2d", "toImage"],
    };
    return Plotly.newPlot(element, figure.data, figure.layout, config);
  });
  Promise.all(drawn).then(() => {
    document.body.dataset.chartsDrawn = String(charts.length);
  });
}

function submitOnChange() {
  const form = document.getElementById("filters");
  if (!form) return;
  const school = document.getElementById("school");
  const course = document.getElementById("course");
  school.addEventListener("change", () => {
    course.value = ""; // a course belongs to one school
    form.requestSubmit();
  });
  course.addEventListener("change", () => form.requestSubmit());
  // Not the date: typing one fires "change" at every digit of the year.
  // Leave empty fields out of the address, so "now" stays now.
  form.addEventListener("formdata", (event) => {
    for (const [name, value] of Array.from(event.formData.entries())) {
      if (value === "") event.formData.delete(name);
    }
  });
}

function cellValue(row, index, type) {
  const value = row.cells[index].dataset.value ?? row.cells[index].textContent;
  if (type !== "number") return value.toLowerCase();
  const number = parseFloat(value);
  return Number.isNaN(number) ? -Infinity : number;
}

function makeSortable(table) {
  const headers = Array.from(table.tHead.rows[0].cells);
  headers.forEach((header, index) => {
    header.tabIndex = 0;
    header.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") {
        event.preventDefault();
        header.click();
      }
    });
    header.addEventListener("click", () => {
      const type = header.dataset.type;
      const ascending = header.getAttribute("aria-sort") !== "ascending";
      headers.forEach((other) => other.removeAttribute("aria-sort"));
      header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
      const body = table.tBodies[0];
      const rows = Array.from(body.rows).filter((row) => row.cells.length > 1);
      rows.sort((a, b) => {
        const x = cellValue(a, index, type);
        const y = cellValue(b, index, type);
        const order = x < y ? -1 : x > y ? 1 : 0;
        return ascending ? order : -order;
      });
      rows.forEach((row) => body.appendChild(row));
    });
  });
}

function reloadOnNewSnapshot() {
  const seconds = Number(document.body.dataset.refreshSeconds || 10);
  const shown = document.body.dataset.version;
  const check = () => {
    fetch("/version", { cache: "no-store" })
      .then((response) => response.json())
      .then((answer) => {
        if (answer.version !== shown) window.location.reload();
      })
      .catch(() => {}) // the dashboard is restarting: ask again later
      .finally(() => setTimeout(check, seconds * 1000));
  };
  setTimeout(check, seconds * 1000);
}

document.addEventListener("DOMContentLoaded", () => {
  drawCharts();
  submitOnChange();
  document.querySelectorAll("table.sortable").forEach(makeSortable);
  reloadOnNewSnapshot();
});
