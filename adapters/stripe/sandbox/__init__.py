"""billtrail's offline Stripe: a local HTTP server answering the Stripe API
subset billtrail uses, with Stripe's semantics. See README.md here.

In-process use::

    with start_sandbox() as sandbox:
        client = stripe.StripeClient(sandbox.api_key,
                                     base_addresses={"api": sandbox.url},
                                     max_network_retries=2)
"""

from adapters.stripe.sandbox.app import SANDBOX_API_KEY, Sandbox
from adapters.stripe.sandbox.control import SandboxControl, SandboxControlError, wait_until
from adapters.stripe.sandbox.server import RunningSandbox, serve_forever, start_sandbox

__all__ = [
    "SANDBOX_API_KEY",
    "RunningSandbox",
    "Sandbox",
    "SandboxControl",
    "SandboxControlError",
    "serve_forever",
    "start_sandbox",
    "wait_until",
]
