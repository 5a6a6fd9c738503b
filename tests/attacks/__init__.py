"""One module per class of attack from issue 9, each written as the attacker would try it."""
