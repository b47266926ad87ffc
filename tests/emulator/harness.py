"""Start localstripe for tests and reach the parts of it the Stripe SDK cannot.

`LocalStripe` runs `run_localstripe.py` in its own process on 127.0.0.1 with a free port. Point
the SDK at `LocalStripe.url` with `secret_key`. The methods here cover localstripe's own
configuration routes and the calls a browser makes with the publishable key.
"""

from __future__ import annotations

import contextlib
import queue
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import httpx

SCRIPT = Path(__file__).with_name("run_localstripe.py")
READY_PREFIX = "localstripe listening on "
START_TIMEOUT_SECONDS = 10.0
STOP_TIMEOUT_SECONDS = 10.0
REQUEST_TIMEOUT_SECONDS = 10.0
OUTPUT_LINES_KEPT = 200


class LocalStripeError(Exception):
    """An error status returned by localstripe, with its Stripe-style error hash."""

    def __init__(self, response: httpx.Response) -> None:
        self.status_code = response.status_code
        try:
            self.error: dict[str, Any] = response.json()["error"]
        except (ValueError, KeyError, TypeError):
            self.error = {"message": response.text.strip()}

        request = response.request
        message = self.error.get("message", "no message")
        super().__init__(
            f"{request.method} {request.url.path} failed with {self.status_code}: {message}"
        )


class LocalStripe:
    """One localstripe server process on 127.0.0.1."""

    secret_key = "sk_test_paystream_local"
    publishable_key = "pk_test_paystream_local"

    def __init__(self) -> None:
        self._process: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None
        self._http: httpx.Client | None = None
        self._url: str | None = None
        self._output: deque[str] = deque(maxlen=OUTPUT_LINES_KEPT)
        self._output_lock = threading.Lock()

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("localstripe is not running: call start() first.")
        return self._url

    @property
    def output(self) -> list[str]:
        """The server's most recent stdout and stderr lines: access log and webhook results."""
        with self._output_lock:
            return list(self._output)

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        if self._process is not None:
            raise RuntimeError(f"localstripe is already running at {self._url}.")

        process = subprocess.Popen(
            [sys.executable, str(SCRIPT), "--port", "0"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._process = process
        ready: queue.Queue[str | None] = queue.Queue()
        assert process.stdout is not None  # guaranteed by stdout=PIPE
        self._reader = threading.Thread(
            target=self._read_output, args=(process.stdout, ready), daemon=True
        )
        self._reader.start()

        try:
            url = ready.get(timeout=START_TIMEOUT_SECONDS)
        except queue.Empty:
            url = None
        if url is None:
            self.stop()
            raise RuntimeError(
                f"localstripe did not start within {START_TIMEOUT_SECONDS:g} s. Its output:\n"
                + "".join(self.output)
            )

        self._url = url
        self._http = httpx.Client(base_url=url, timeout=REQUEST_TIMEOUT_SECONDS)

    def _read_output(self, stream: IO[str], ready: queue.Queue[str | None]) -> None:
        # Draining the pipe for the server's whole life keeps a full pipe from blocking it.
        announced = False
        for line in stream:
            with self._output_lock:
                self._output.append(line)
            if not announced and line.startswith(READY_PREFIX):
                ready.put(line[len(READY_PREFIX):].strip())
                announced = True
        if not announced:
            ready.put(None)

    def stop(self) -> int | None:
        """Stop the server with SIGTERM, or SIGKILL after a timeout, and return its exit code.

        Returns None when the server was not running.
        """
        if self._http is not None:
            self._http.close()
            self._http = None
        self._url = None
        process, self._process = self._process, None
        if process is None:
            return None

        process.terminate()
        try:
            exit_code = process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            exit_code = process.wait()

        if self._reader is not None:
            self._reader.join()
            self._reader = None
        if process.stdout is not None:
            process.stdout.close()
        return exit_code

    def _request(self, method: str, path: str, *, secret_key: bool = True, **kwargs: Any) -> Any:
        if self._http is None:
            raise RuntimeError("localstripe is not running: call start() first.")
        headers = {"Authorization": f"Bearer {self.secret_key}"} if secret_key else {}
        response = self._http.request(method, path, headers=headers, **kwargs)
        if response.is_error:
            raise LocalStripeError(response)
        return response.json() if response.content else None

    def register_webhook(
        self, name: str, url: str, secret: str, events: list[str] | None = None
    ) -> None:
        """Send events to `url`, signed with `secret`; `events` limits the types sent.

        Registering a name again replaces it. Registrations last until the server stops,
        because localstripe has no route that removes one and `reset()` keeps them.
        """
        body: dict[str, Any] = {"url": url, "secret": secret}
        if events is not None:
            body["events"] = events
        self._request("POST", f"/_config/webhooks/{name}", json=body)

    def reset(self) -> None:
        """Delete every stored object and event, but keep webhook registrations.

        localstripe sends each webhook about 1 s after its event, so events raised before the
        reset can still arrive after it.
        """
        self._request("DELETE", "/_config/data")

    def authenticate_payment_intent(
        self, pi_id: str, client_secret: str, success: bool = True
    ) -> dict[str, Any]:
        """Complete or fail the 3D Secure step of a `requires_action` payment intent.

        This is localstripe's stand-in for the 3D Secure page: it takes the publishable key.
        """
        result: dict[str, Any] = self._request(
            "POST",
            f"/v1/payment_intents/{pi_id}/_authenticate",
            secret_key=False,
            json={"key": self.publishable_key, "client_secret": client_secret, "success": success},
        )
        return result

    def confirm_payment_intent_as_browser(
        self, pi_id: str, client_secret: str, payment_method: str = "pm_card_visa"
    ) -> dict[str, Any]:
        """Confirm a payment intent with `payment_method` as Stripe.js does for a customer.

        Returns the payment intent. A card that needs 3D Secure leaves it `requires_action`,
        so follow with `authenticate_payment_intent`. A decline raises `LocalStripeError`
        with status 402.
        """
        # Stripe.js confirms with the publishable key and passes the payment method in the same
        # call. localstripe 1.15.10 confirms only with the secret key and rejects
        # confirm(payment_method=...) with 500 "Not implemented". So this checks the client
        # secret, sets the payment method by an update, then confirms, all with the secret key.
        payment_intent = self._request("GET", f"/v1/payment_intents/{pi_id}")
        if payment_intent["client_secret"] != client_secret:
            raise ValueError(f"client_secret does not belong to payment intent {pi_id}")

        # After a decline this works too: run_localstripe.py drops the declined charge when
        # the payment method changes, as Stripe does.
        self._request(
            "POST", f"/v1/payment_intents/{pi_id}", data={"payment_method": payment_method}
        )
        result: dict[str, Any] = self._request("POST", f"/v1/payment_intents/{pi_id}/confirm")
        return result


@contextlib.contextmanager
def running_localstripe() -> Iterator[LocalStripe]:
    """Yield a started `LocalStripe` and stop it on exit."""
    server = LocalStripe()
    server.start()
    try:
        yield server
    finally:
        server.stop()
