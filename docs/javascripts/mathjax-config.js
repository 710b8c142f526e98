// MathJax 3, served with the site (docs/build.py fetches it into javascripts/mathjax/).
// In a page's text it typesets only the spans and divs pymdownx.arithmatex makes from the
// Markdown pages' $...$ and $$...$$ (delimited \( \) and \[ \]), and the notebook pages,
// whose Markdown cells keep their $...$ as written; a stray $ elsewhere stays a dollar.
// Outside the text (navigation, table of contents) it typesets everything.
window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"], ["$", "$"]],
    displayMath: [["\\[", "\\]"], ["$$", "$$"]],
    processEscapes: true,
    processEnvironments: true,
  },
  options: {
    ignoreHtmlClass: "md-content__inner",
    processHtmlClass: "arithmatex|jupyter-wrapper",
  },
};
