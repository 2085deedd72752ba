"""The web app: a real uvicorn server on 127.0.0.1, its JSON API and bad input, and a real headless browser."""

from __future__ import annotations

import base64
import io
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from mnistlab.datasets import mnist
from mnistlab.photolike import draw_digit, photo_set, stroke_points
from mnistlab.predict import Predictor
from tests.helpers import serve_process


def png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def server(mlp_run: Path, tmp_path_factory: pytest.TempPathFactory):
    """``mnistlab serve`` in a real subprocess, the way a user starts it; yields (base URL, process, log)."""
    log = tmp_path_factory.mktemp("server") / "server.log"
    with serve_process(mlp_run, log, "--max-upload-mb", "2") as served:
        yield served


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server[0], timeout=60) as c:
        yield c


def test_health_model_and_page(client, server) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    info = client.get("/api/model").json()
    assert info["architecture"] == "mlp" and info["classes"] == [str(i) for i in range(10)]
    assert info["kind"] == "digit" and 0.95 < info["test_accuracy"] <= 1 and info["parameters"] == 101_770
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    # Offline: the page and its assets refer to nothing outside this server.
    assets = [page.text] + [client.get(f"/static/{n}").text for n in ("app.js", "style.css")]
    for text in assets:
        assert "http://" not in text and "https://" not in text and "//cdn" not in text
    assert '<script src="/static/app.js">' in page.text
    assert client.get("/static/../../etc/passwd").status_code == 404
    assert f"on http://127.0.0.1:{server[0].rsplit(':', 1)[1]}/" in server[2].read_text()  # localhost by default


def test_not_reachable_from_other_interfaces(server) -> None:
    port = int(server[0].rsplit(":", 1)[1])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))  # picks the outward interface; sends nothing
            outward = s.getsockname()[0]
        except OSError:
            pytest.skip("no outward network interface here")
    if outward.startswith("127."):
        pytest.skip("no outward network interface here")
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://{outward}:{port}/healthz", timeout=5)


def test_predict_accepts_every_documented_shape(client) -> None:
    picture = png(draw_digit(3))
    answers = [
        client.post("/api/predict", files={"file": ("three.png", picture, "image/png")}),
        client.post("/api/predict", json={"image": data_url(picture)}),
        client.post("/api/predict", data={"image": data_url(picture)}, files={"x": ("x", b"", "text/plain")}),
        client.post("/api/predict", content=picture, headers={"content-type": "image/png"}),
    ]
    for r in answers:
        assert r.status_code == 200, r.text
        d = r.json()
        assert d["class"] == "3" and d["index"] == 3 and d["classes"] == [str(i) for i in range(10)]
        assert abs(sum(d["probabilities"].values()) - 1) < 1e-4 and len(d["top"]) == 3
        seen = np.asarray(Image.open(io.BytesIO(base64.b64decode(d["input"].split(",", 1)[1]))))
        assert seen.shape == (28, 28) and np.array_equal(seen, np.array(d["input_pixels"], np.uint8))


def _bomb() -> bytes:
    import struct
    import zlib

    data = png(Image.new("L", (1, 1)))
    chunk = b"IHDR" + struct.pack(">II", 50000, 50000) + data[24:29]
    return data[:12] + chunk + struct.pack(">I", zlib.crc32(chunk)) + data[33:]


BAD_REQUESTS = {
    "not an image": (dict(files={"file": ("notes.png", b"just text", "image/png")}), 400, "not an image"),
    "empty canvas": (dict(json={"image": data_url(png(Image.new("RGB", (280, 280), "white")))}), 422, "no digit found"),
    "huge upload": (dict(files={"file": ("big.png", b"\0" * (3 << 20), "image/png")}), 413, "too large"),
    "huge chunked upload": (dict(content=iter([b"\0" * (1 << 20)] * 3), headers={"content-type": "image/png"}), 413, "too large"),
    "decompression bomb": (dict(files={"file": ("bomb.png", _bomb(), "image/png")}), 400, "too large"),
    "real compressed bomb": (dict(content=png(Image.new("1", (7000, 7000), 1)), headers={"content-type": "image/png"}), 400, "7000×7000"),
    "malformed JSON": (dict(content=b'{"image": ', headers={"content-type": "application/json"}), 400, "malformed JSON"),
    "JSON without image": (dict(json={"picture": 1}), 400, "JSON body must be an object"),
    "bad base64": (dict(json={"image": "data:image/png;base64,@@@"}), 400, "invalid base64"),
    "data URL not an image": (dict(json={"image": "data:text/plain;base64,aGk="}), 400, "not an image"),
    "unsupported type": (dict(content=b"hello", headers={"content-type": "text/plain"}), 415, "unsupported content type"),
    "empty body": (dict(content=b"", headers={"content-type": "image/png"}), 400, "empty request"),
    "multipart without file": (dict(data={"other": "1"}, files={"x": ("x", b"", "text/plain")}), 400, "without a 'file'"),
    "broken multipart": (dict(content=b"--zz\r\nnonsense", headers={"content-type": "multipart/form-data; boundary=zz"}), 400, "multipart"),
    "empty file upload": (dict(files={"file": ("e.png", b"", "image/png")}), 400, "empty"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_input_gets_a_clear_json_error(client, case: str) -> None:
    kwargs, status, fragment = BAD_REQUESTS[case]
    r = client.post("/api/predict", **kwargs)
    assert r.status_code == status, r.text
    body = r.json()
    assert list(body) == ["error"] and fragment in body["error"]
    assert "Traceback" not in r.text and 'File "' not in r.text


def test_other_routes_answer_json_errors(client) -> None:
    assert client.get("/api/predict").status_code == 405
    r = client.get("/nowhere")
    assert r.status_code == 404 and "error" in r.json()


def test_server_survives_bad_input_and_concurrent_clients(client, server) -> None:
    for kwargs, _, _ in BAD_REQUESTS.values():
        client.post("/api/predict", **kwargs)
    picture = png(draw_digit(7))

    def one(_: int) -> int:
        with httpx.Client(base_url=server[0], timeout=60) as c:
            return c.post("/api/predict", files={"file": ("7.png", picture, "image/png")}).json()["index"]

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(one, range(24))) == [7] * 24
    assert server[1].poll() is None and client.get("/healthz").status_code == 200
    assert "Traceback" not in server[2].read_text()


def test_sixteen_clients_under_load_get_no_errors(server) -> None:
    """A short version of ``python -m benchmarks.bench_serve --clients 16 --seconds 15``: 16 keep-alive
    clients posting what the page sends, for 3 s; every answer is a 200 with the right digit."""
    import threading

    body = {"image": data_url(png(draw_digit(5, size=280, width=18).convert("RGBA")))}
    stop = time.monotonic() + 3
    results: list[tuple[int, float]] = []
    lock = threading.Lock()

    def client() -> None:
        mine = []
        with httpx.Client(base_url=server[0], timeout=120) as c:
            while not mine or time.monotonic() < stop:  # at least one request each, however loaded the machine
                t = time.perf_counter()
                r = c.post("/api/predict", json=body)
                ok = r.status_code == 200 and r.json()["class"] == "5"
                mine.append((int(ok), time.perf_counter() - t))
        with lock:
            results.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(16)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(results) >= 16 and all(ok for ok, _ in results), sum(1 - ok for ok, _ in results)
    assert server[1].poll() is None


# -- a real browser ---------------------------------------------------------------------------------


def _wait_answer(driver, timeout: float = 30) -> str:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def settled(d) -> bool:
        s = d.find_element(By.ID, "status")
        return s.get_attribute("data-state") == "done" and s.get_attribute("data-done") == s.get_attribute("data-sent")

    WebDriverWait(driver, timeout).until(settled)
    return driver.find_element(By.ID, "answer").text


def _draw(driver, digit: int, touch: bool = False) -> None:
    """Draw ``digit`` with mouse (or finger) strokes, as a person would, on the 280-pixel canvas."""
    from selenium.webdriver.common.actions import interaction
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    from selenium.webdriver.common.actions.pointer_input import PointerInput
    from selenium.webdriver.common.by import By

    canvas = driver.find_element(By.ID, "canvas")
    kind = interaction.POINTER_TOUCH if touch else interaction.POINTER_MOUSE
    for stroke in stroke_points(digit, 280):
        actions = ActionBuilder(driver, mouse=PointerInput(kind, "finger" if touch else "mouse"), duration=0)
        x0, y0 = stroke[0]
        actions.pointer_action.move_to(canvas, int(x0 - 140), int(y0 - 140)).pointer_down()
        for x, y in stroke[1:]:
            actions.pointer_action.move_to(canvas, int(x - 140), int(y - 140))
        actions.pointer_action.pointer_up()
        actions.perform()


CANVAS_IS_WHITE = """const c = document.getElementById('canvas');
const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
for (let i = 0; i < d.length; i++) if (d[i] !== 255) return false;
return true;"""


@pytest.fixture
def page(browser, server):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(server[0] + "/")
    WebDriverWait(browser, 30).until(lambda d: "mlp" in d.find_element(By.ID, "model-info").text)
    browser.find_element(By.ID, "live").click()  # off: answers come from Predict clicks only
    return browser


def test_browser_draw_predict_clear_and_upload(page, mlp_run, tmp_path) -> None:
    from selenium.webdriver.common.by import By

    find = lambda i: page.find_element(By.ID, i)  # noqa: E731
    assert page.execute_script(CANVAS_IS_WHITE)
    for digit in (0, 3, 4, 7):
        _draw(page, digit)
        assert not page.execute_script(CANVAS_IS_WHITE)
        find("predict").click()
        assert _wait_answer(page) == str(digit)
        assert len(page.find_elements(By.CSS_SELECTOR, "#bars .bar")) == 10
        assert page.find_element(By.CSS_SELECTOR, "#bars .bar.top").get_attribute("data-class") == str(digit)
        assert find("input28").get_attribute("src").startswith("data:image/png;base64,")
        find("clear").click()
        assert page.execute_script(CANVAS_IS_WHITE)
        assert find("answer").text == "–" and not page.find_elements(By.CSS_SELECTOR, "#bars .bar")

    # An empty canvas gets the server's "no digit found", shown on the page.
    find("predict").click()
    assert _wait_answer(page) == "?" and "no digit found" in find("error").text

    # Upload a phone-photo-like picture that the model gets right through the library.
    (_, _), (x, y) = mnist.load_data()
    photos, labels = photo_set(x[300:], y[300:], 20, seed=4)
    preds = Predictor(mlp_run).predict(photos, errors="keep")
    i = next(k for k, p in enumerate(preds) if p.index == labels[k])
    path = tmp_path / f"photo_{labels[i]}.jpg"
    path.write_bytes(photos[i])
    find("file").send_keys(str(path))
    assert _wait_answer(page) == str(labels[i])
    find("clear").click()
    assert page.execute_script(CANVAS_IS_WHITE) and find("file").get_attribute("value") == ""
    severe = [e for e in page.get_log("browser") if e["level"] == "SEVERE" and "/api/predict" not in e["message"]]
    assert not severe, severe  # nothing failed to load (the 422 above is the expected answer)


def test_browser_high_dpi_touch_and_live_prediction(browser, server) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride", {"width": 1200, "height": 900, "deviceScaleFactor": 2, "mobile": False}
    )
    try:
        browser.get(server[0] + "/")
        WebDriverWait(browser, 30).until(lambda d: "mlp" in d.find_element(By.ID, "model-info").text)
        assert browser.execute_script("return [window.devicePixelRatio, document.getElementById('canvas').width]") == [
            2,
            560,
        ]
        # Predict-as-you-draw is on by default: lifting the pen is enough.
        _draw(browser, 2)
        assert _wait_answer(browser) == "2"
        browser.find_element(By.ID, "clear").click()
        browser.execute_cdp_cmd("Emulation.setTouchEmulationEnabled", {"enabled": True, "maxTouchPoints": 1})
        _draw(browser, 7, touch=True)
        assert _wait_answer(browser) == "7"
    finally:
        browser.execute_cdp_cmd("Emulation.setTouchEmulationEnabled", {"enabled": False})
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def test_serve_cli_refuses_bad_arguments(tmp_path, server, mlp_run) -> None:
    from tests.helpers import run_cli

    r = run_cli("serve", str(tmp_path / "no-run"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "no such run folder" in r.stderr
    port = server[0].rsplit(":", 1)[1]
    r = run_cli("serve", str(mlp_run), "--port", port)  # the module's server holds it
    assert (
        r.returncode == 2
        and r.stderr.strip() == f"mnistlab: error: cannot listen on 127.0.0.1:{port} (Address already in use)"
    )
    r = run_cli("serve", str(mlp_run), "--port", "70000")
    assert r.returncode == 2 and "port must lie in 0..65535" in r.stderr


def test_host_check_rules() -> None:
    """What the Host header may say: localhost names, the bound address, --allow-host names; with a
    wildcard bind also any IP address (a rebinding page always sends its own domain name)."""
    from mnistlab.web import _allowed_hosts, _host_allowed

    local = _allowed_hosts("127.0.0.1", ["Digits.Example"])
    for ok in ("127.0.0.1:8000", "localhost", "LOCALHOST:80", "[::1]:8000", "a.localhost", "digits.example:8000"):
        assert _host_allowed(ok, local), ok
    for bad in ("evil.example", "127.0.0.1.evil.example", "10.0.0.5:8000", "", "localhost.evil.example", "[::2]"):
        assert not _host_allowed(bad, local), bad
    wild = _allowed_hosts("0.0.0.0", [])
    assert _host_allowed("192.168.1.20:8000", wild) and _host_allowed("[fe80::1]:8000", wild)
    assert not _host_allowed("evil.example", wild)


def _viewport(driver, width: int, height: int) -> None:
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600},
    )


def _cjk_font_installed() -> bool | None:
    import shutil

    if not shutil.which("fc-list"):
        return None
    out = subprocess.run(["fc-list", ":lang=zh", "family"], capture_output=True, text=True).stdout
    return bool(out.strip())


def _screenshot_shows_ink(driver, path: Path, element_id: str) -> bool:
    """Save a screenshot and say whether the element's box in it holds dark pixels (the answer was drawn)."""
    driver.save_screenshot(str(path))
    r = driver.execute_script(
        f"const r = document.getElementById('{element_id}').getBoundingClientRect(); "
        "return [r.left, r.top, r.right, r.bottom, innerWidth, innerHeight];"
    )
    with Image.open(path) as im:
        assert im.size == (r[4], r[5])  # the whole viewport, nothing cut
        box = im.convert("L").crop(tuple(int(v) for v in r[:4]))
        return bool(np.asarray(box).min() < 80)


def test_browser_phone_width_answer_in_view_no_tofu_no_placeholder(browser, server, tmp_path) -> None:
    # At 400x800 (a phone), after drawing, the answer lies inside the viewport without scrolling; nothing
    # is wider than the screen; before any answer there is no broken-image placeholder; the Chinese
    # subtitle shows only where a font draws it (else its pinyin). Screenshots at desktop and phone size.
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    find = lambda i: browser.find_element(By.ID, i)  # noqa: E731
    try:
        for width, height in ((1200, 900), (400, 800)):
            _viewport(browser, width, height)
            browser.get(server[0] + "/")
            WebDriverWait(browser, 30).until(lambda d: "mlp" in d.find_element(By.ID, "model-info").text)
            assert not find("seen").is_displayed() and not find("input28").is_displayed()
            cjk = browser.execute_script("return document.documentElement.dataset.cjk")
            installed = _cjk_font_installed()
            if installed is not None:
                assert cjk == ("yes" if installed else "no")
            assert find("zh").is_displayed() == (cjk == "yes") and find("zh-latin").is_displayed() == (cjk == "no")
            _draw(browser, 3)
            assert _wait_answer(browser) == "3"
            assert find("seen").is_displayed()
            top, bottom, inner_h, scroll_y, page_w = browser.execute_script(
                "const r = document.getElementById('answer').getBoundingClientRect(); "
                "return [r.top, r.bottom, innerHeight, scrollY, document.documentElement.scrollWidth];"
            )
            assert scroll_y == 0 and 0 <= top and bottom <= inner_h, (width, top, bottom, inner_h)
            assert page_w <= width
            assert _screenshot_shows_ink(browser, tmp_path / f"page-{width}.png", "answer")
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def test_browser_bad_upload_clears_the_old_picture(page, tmp_path) -> None:
    from selenium.webdriver.common.by import By

    find = lambda i: page.find_element(By.ID, i)  # noqa: E731
    _draw(page, 5)
    find("predict").click()
    _wait_answer(page)
    assert not page.execute_script(CANVAS_IS_WHITE) and find("seen").is_displayed()
    bad = tmp_path / "holiday.png"
    bad.write_bytes(b"these are not the pixels you are looking for")
    find("file").send_keys(str(bad))
    assert _wait_answer(page) == "?" and find("error").text
    assert page.execute_script(CANVAS_IS_WHITE)  # the earlier drawing is gone, not shown beside the error
    assert not find("seen").is_displayed()


def test_report_tables_fit_a_phone(browser, mlp_run, tmp_path) -> None:
    from mnistlab.report import write_report

    path = write_report(mlp_run, tmp_path / "report.html")
    _viewport(browser, 400, 800)
    try:
        browser.get(path.resolve().as_uri())
        widths = browser.execute_script(
            "return [document.documentElement.scrollWidth, "
            "...[...document.querySelectorAll('table')].map(t => t.getBoundingClientRect().right)];"
        )
        assert len(widths) >= 5 and max(widths) <= 400, widths
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
