"""An order service over stockctl, as the guide's STOCK_SYSTEM_GUIDE.md describes it: a cart
that checks stock, a checkout that reserves inside the order transaction and confirms after
commit, cancellation and ``payment.failed`` that release. See README.md beside this file."""
