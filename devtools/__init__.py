"""Development tools shared by the tests, the bench and the screenshot script; never by the product.

They live outside ``tests/`` so that ``bench/`` and ``docs/screenshots/capture.py`` can use them
without importing the test suite: a real bank process (``bank_process``), the independent ATM1
client (``contract_client``) and a virtual screen with real key presses (``display``).
"""
