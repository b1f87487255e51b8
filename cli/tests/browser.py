"""Drives a real bench report.html in headless Chromium through selenium, as a person would,
and prints what it saw as one JSON object on stdout; cli/tests/browser.rs judges it.

Usage: /usr/bin/python3 browser.py REPORT.html SCREENSHOT_DIR PROFILE_DIR

It clicks a narrow frame of an on-CPU flame graph and measures its width before and after,
hovers a frame for the details line, searches a function name with the graph's own Search
button (a prompt) and reads the matched share, searches every graph from the page's search
box, looks into an off-CPU graph, lists the plots, and saves a screenshot at each step.
Debian's python3-selenium is installed for /usr/bin/python3.
"""
import json
import os
import re
import sys
import time

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

REPORT, SHOTS, PROFILE = sys.argv[1], sys.argv[2], sys.argv[3]
TIMEOUT = 30
result = {"screenshots": [], "steps": []}


def step(name):
    result["steps"].append(name)
    print("step:", name, file=sys.stderr, flush=True)


def shot(driver, name):
    path = os.path.join(SHOTS, name + ".png")
    driver.save_screenshot(path)
    result["screenshots"].append(path)


def wait(driver, fn, what):
    return WebDriverWait(driver, TIMEOUT, poll_frequency=0.1).until(
        lambda d: fn(d), message="waiting for " + what
    )


# Inside a graph's frame: inferno's init has run (fluid drawing resets the zoom).
READY = "return typeof total_samples === 'number' && !!document.getElementById('frames');"

# Inside a graph's frame: the narrowest frame still wide enough to click (6 px or more)
# and at most a tenth of the graph, with its function name and width; among those in the
# window's first 880 px (the frame's top is at the window's, below the page's search bar).
NARROW = """
var gs = document.querySelectorAll('#frames > g');
var best = null;
for (var i = 0; i < gs.length; i++) {
  var r = gs[i].querySelector('rect').getBoundingClientRect();
  var full = document.getElementById('frames').getBoundingClientRect().width;
  if (r.width >= 6 && r.width <= full / 10 && r.bottom < 880 &&
      (best === null || r.width < best.width)) {
    best = {index: i, width: r.width, full: full, name: g_to_func(gs[i])};
  }
}
return best;
"""

WIDTH = "return document.querySelectorAll('#frames > g')[arguments[0]]" \
        ".querySelector('rect').getBoundingClientRect().width;"


def frames_by_title(driver):
    out = []
    for f in driver.find_elements(By.CSS_SELECTOR, "iframe.flame"):
        out.append((f.get_attribute("title"), f))
    return out


def main():
    opts = Options()
    opts.binary_location = "/usr/bin/chromium"
    for a in [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1400,1000",
        "--user-data-dir=" + PROFILE,
    ]:
        opts.add_argument(a)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    driver.set_page_load_timeout(60)
    try:
        run(driver)
    finally:
        driver.quit()
    print(json.dumps(result))


def run(driver):
    step("open")
    driver.get("file://" + os.path.abspath(REPORT))
    wait(driver, lambda d: d.execute_script("return document.readyState") == "complete", "load")
    result["title"] = driver.title
    plots = driver.find_elements(By.CSS_SELECTOR, "svg.plot")
    result["plots"] = [p.get_attribute("aria-label") for p in plots]
    result["plot_marks"] = len(driver.find_elements(By.CSS_SELECTOR, "svg.plot rect.bar"))
    result["plot_points"] = len(driver.find_elements(By.CSS_SELECTOR, "svg.plot circle"))
    shot(driver, "01-report-top")
    if plots:
        driver.execute_script("arguments[0].scrollIntoView({block: 'start'});", plots[0])
        shot(driver, "02-plots")
    graphs = frames_by_title(driver)
    result["graphs"] = [t for t, _ in graphs]
    result["warnings"] = [w.text for w in driver.find_elements(By.CSS_SELECTOR, ".figure .warn")]
    result["diff_notes"] = [n.text for n in driver.find_elements(By.CSS_SELECTOR, ".figure .method")]

    # Zoom: the first strategy's on-CPU graph, its narrowest clickable frame.
    step("zoom")
    title, frame = next((t, f) for t, f in graphs if t.endswith("on-CPU flame graph"))
    result["zoom_graph"] = title
    driver.execute_script("arguments[0].scrollIntoView({block: 'start'});", frame)
    driver.switch_to.frame(frame)
    wait(driver, lambda d: d.execute_script(READY), "the flame graph's script")
    narrow = wait(driver, lambda d: d.execute_script(NARROW), "a narrow frame")
    g = driver.find_elements(By.CSS_SELECTOR, "#frames > g")[narrow["index"]]
    rect = g.find_element(By.TAG_NAME, "rect")
    ActionChains(driver).move_to_element(rect).perform()
    details = driver.find_element(By.ID, "details").text
    ActionChains(driver).click(rect).perform()
    after = wait(
        driver,
        lambda d: (lambda w: w if w > narrow["width"] * 1.5 else None)(
            d.execute_script(WIDTH, narrow["index"])
        ),
        "the clicked frame to widen",
    )
    unzoom_shown = "hide" not in (driver.find_element(By.ID, "unzoom").get_attribute("class") or "")
    result["zoom"] = {
        "function": narrow["name"],
        "before_px": narrow["width"],
        "after_px": after,
        "graph_px": narrow["full"],
        "details": details,
        "reset_shown": unzoom_shown,
    }
    driver.switch_to.default_content()
    shot(driver, "03-zoomed")

    # Reset, then the graph's own Search button: a prompt takes the function's name.
    step("search in graph")
    # The graph's top (its buttons) below the page's search bar.
    driver.execute_script("arguments[0].scrollIntoView({block: 'start'});", frame)
    driver.switch_to.frame(frame)
    ActionChains(driver).click(driver.find_element(By.ID, "unzoom")).perform()
    term = re.match(r"[A-Za-z0-9_]+", narrow["name"] or "")
    term = term.group(0) if term else "."
    result["search_term"] = term
    ActionChains(driver).click(driver.find_element(By.ID, "search")).perform()
    alert = WebDriverWait(driver, TIMEOUT).until(EC.alert_is_present(), "the search prompt")
    alert.send_keys(term)
    alert.accept()
    matched = wait(
        driver,
        lambda d: d.find_element(By.ID, "matched").text or None,
        "the matched share",
    )
    result["matched"] = matched
    result["highlighted"] = driver.execute_script(
        "return Array.from(document.querySelectorAll('#frames rect'))"
        ".filter(r => r.getAttribute('fill') === searchcolor).length;"
    )
    driver.switch_to.default_content()
    # The graph's bottom: its highlighted frames and "Matched: N%" at the right.
    driver.execute_script("arguments[0].scrollIntoView({block: 'end'});", frame)
    shot(driver, "04-searched")

    # The page's search box: every graph answers with its own matched share.
    step("search every graph")
    box = driver.find_element(By.ID, "flame-search")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", box)
    # tcp_close too (the close path every close-per-request graph shows); the term keeps a
    # match certain in the graph it came from.
    page_term = "tcp_close|" + term
    result["page_search_term"] = page_term
    box.send_keys(page_term)
    box.send_keys(Keys.ENTER)
    ids = {f.get_attribute("data-flame"): t for t, f in graphs}

    def answers(d):
        got = {}
        for s in d.find_elements(By.CSS_SELECTOR, "span.matched"):
            got[ids.get(s.get_attribute("data-flame"))] = s.text
        # Graphs with nothing to draw have no script and never answer; on-CPU ones do.
        oncpu = [t for t in ids.values() if "on-CPU" in t]
        return got if all(got.get(t) for t in oncpu) else None

    result["page_search"] = wait(driver, answers, "every on-CPU graph's matched share")
    # The zoomed graph's share as the page shows it, under the graph.
    span = driver.find_element(
        By.CSS_SELECTOR, 'span.matched[data-flame="%s"]' % frame.get_attribute("data-flame")
    )
    driver.execute_script("arguments[0].scrollIntoView({block: 'end'});", span)
    shot(driver, "05-page-search")

    # An off-CPU graph: frames drawn, scrolled into view.
    step("off-CPU")
    off = [(t, f) for t, f in graphs if "off-CPU flame graph" in t]
    result["offcpu_graphs"] = len(off)
    if off:
        t, f = off[0]
        driver.execute_script("arguments[0].scrollIntoView({block: 'start'});", f)
        driver.switch_to.frame(f)
        result["offcpu_frames"] = driver.execute_script(
            "return document.querySelectorAll('#frames > g').length;"
        )
        driver.switch_to.default_content()
        shot(driver, "06-offcpu")
    diff = [(t, f) for t, f in graphs if t.startswith("on-CPU:")]
    if diff:
        # The figure, so that its caption, totals and warning show above the graph.
        figure = diff[0][1].find_element(By.XPATH, "..")
        driver.execute_script("arguments[0].scrollIntoView({block: 'start'});", figure)
        time.sleep(0.2)
        shot(driver, "07-differential")


if __name__ == "__main__":
    main()
