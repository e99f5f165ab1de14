"""The console's page and assets: served from the package with a strict
Content-Security-Policy and no cookies, free of inline script and of anything fetched
from elsewhere, shipped in the wheel, off in production unless enabled."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import httpx
import pytest

from embedstream.api.app import create_app
from embedstream.api.console import CONTENT_SECURITY_POLICY, STATIC
from embedstream.config import ApiSettings, AppSettings, AuthSettings, RedisSettings, Settings

ROOT = Path(__file__).resolve().parents[2]
ASSETS = sorted(p for p in STATIC.rglob("*") if p.is_file())


def settings(*, env: str = "development", console: bool | None = None) -> Settings:
    made = Settings()
    made.app = AppSettings(env=env)
    made.redis = RedisSettings(redis_url="redis://127.0.0.1:1/0", stream_prefix="unit")
    made.api = ApiSettings(console=console)
    made.auth = AuthSettings(jwt_secret="q8Jr2mV0pX7sLw4nZc1bTf6hYk9dGe3a")
    return made


async def fetch(app_settings: Settings, path: str) -> httpx.Response:
    app = create_app(app_settings)  # the console needs no lifespan: nothing is contacted
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        return await client.get(path)


async def test_the_page_is_served_with_a_strict_policy_and_no_cookie() -> None:
    redirect = await fetch(settings(), "/console")
    assert redirect.status_code == 308
    assert redirect.headers["location"] == "console/"
    page = await fetch(settings(), "/console/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert policy == CONTENT_SECURITY_POLICY
    assert "default-src 'self'" in policy and "script-src 'self'" in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert "set-cookie" not in page.headers


@pytest.mark.parametrize("asset", ASSETS, ids=lambda p: str(p.relative_to(STATIC)))
async def test_every_asset_is_served_with_the_policy(asset: Path) -> None:
    response = await fetch(settings(), f"/console/static/{asset.relative_to(STATIC).as_posix()}")
    assert response.status_code == 200
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert response.headers["x-content-type-options"] == "nosniff"
    if asset.suffix == ".js":  # module scripts need a JavaScript type under nosniff
        assert "javascript" in response.headers["content-type"]


def test_no_inline_script_style_or_handler_in_the_page() -> None:
    html = (STATIC / "index.html").read_text()
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", html, re.S)
    assert scripts, "the page loads its script"
    for attributes, body in scripts:
        assert 'src="' in attributes and body.strip() == ""
    assert not re.search(r"<style\b", html)
    assert not re.search(r"\sstyle=", html)
    assert not re.search(r"\son[a-z]+=", html)


@pytest.mark.parametrize("asset", [a for a in ASSETS if a.suffix in {".js", ".css", ".html"}])
def test_nothing_is_fetched_from_elsewhere_and_no_html_is_injected(asset: Path) -> None:
    text = asset.read_text()
    urls = re.findall(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}[^\s\"'`)]*", text, re.I)
    assert urls == [] or urls == ["http://www.w3.org/2000/svg"], urls
    for risky in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert risky not in text, f"{asset.name} uses {risky}"
    if asset.suffix == ".js":
        for module in re.findall(r"""from\s+["']([^"']+)["']""", text):
            assert module.startswith("./") or module.startswith("../"), module
            assert (asset.parent / module).resolve().is_file(), module


async def test_off_in_production_unless_enabled() -> None:
    assert (await fetch(settings(env="production"), "/console/")).status_code == 404
    enabled = await fetch(settings(env="production", console=True), "/console/")
    assert enabled.status_code == 200
    assert (await fetch(settings(console=False), "/console/")).status_code == 404


def test_the_wheel_ships_the_assets(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "hatchling", "build", "-t", "wheel", "-d", str(tmp_path)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    [wheel] = tmp_path.glob("embedstream-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    for asset in ASSETS:
        assert f"embedstream/api/console/static/{asset.relative_to(STATIC).as_posix()}" in shipped
