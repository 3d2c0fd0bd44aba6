"""The Cajero ATM: a tkinter window that talks ATM1 to the bank."""
