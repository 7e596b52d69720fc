"""A shop: products with live stock, a cart, orders.  ``python examples/shop.py``, then
open the addresses it prints (two shoppers, to watch the stock move for both).

The browser edits its cart with ``client.update('carts', ...)`` and places an order
with ``client.create('orders', ...)``; the backend's ``@on_create('orders')`` handler
checks the stock, takes it, prices the order and empties the cart, and every
shopper's page shows the new stock at once.  A background task (``@sync.every``)
plays the rest of the world: other people buying, deliveries restocking, and orders
moving from placed to packed, shipped and delivered.
"""

import random
import threading
import time

from _app import dsn_sync, options, serve

USERS = ["alice", "bob"]
PRODUCTS = {
    "keyboard": ("Mechanical keyboard", 89.00, "#6366f1"),
    "mouse": ("Wireless mouse", 29.00, "#0ea5e9"),
    "hub": ("USB-C hub", 39.00, "#14b8a6"),
    "monitor": ("27-inch monitor", 249.00, "#f59e0b"),
    "stand": ("Laptop stand", 45.00, "#ec4899"),
    "headphones": ("Headphones", 179.00, "#8b5cf6"),
}
STEPS = {"placed": "packed", "packed": "shipped", "shipped": "delivered"}

args = options("A shop with live stock on dsn-sync.", port=8003,
               interval=(2.0, "seconds between stock and order updates (default 2)"))
sync = dsn_sync.DSNSync(port=args.sync_port)
sync.define_table("products", {"key": "id", "fields": ["name", "price", "stock", "color"]})
sync.define_table("carts", {"key": "user", "fields": ["items"]})
sync.define_table("orders", {"key": "id", "fields": ["user", "items", "total", "status", "ts"]})
stock_lock = threading.Lock()  # orders and the background task both take stock

with sync.batch():
    for pid, (name, price, color) in PRODUCTS.items():
        sync.sync("products", pid, {"name": name, "price": price, "stock": random.randint(4, 12), "color": color})
    for user in USERS:
        sync.sync("carts", user, {"items": {}})


@sync.can_read("carts")
def own_cart(cart, ctx):
    return ctx.key == ctx.sub


@sync.can_read("orders")
def own_orders(order, ctx):
    return order.get("user") == ctx.sub


def refuse(message):
    raise dsn_sync.DSNError(message, "rejected")


def checked_items(items):
    if not isinstance(items, dict) or any(pid not in PRODUCTS for pid in items):
        refuse("items must map product ids to quantities")
    if any(not isinstance(q, int) or isinstance(q, bool) or not 0 < q <= 99 for q in items.values()):
        refuse("a quantity is a whole number from 1 to 99")
    return items


@sync.on_update("carts")
def edit_cart(cart, ctx):
    if ctx.key != ctx.sub:
        raise dsn_sync.DSNError("that is not your cart", "forbidden")
    checked_items(cart.get("items", {}))


@sync.on_create("orders")
def place_order(order, ctx):
    """Take the stock, price the order on the server, empty the cart."""
    items = checked_items(order.get("items"))
    if order.get("user") != ctx.sub or not items:
        refuse("an order is for yourself and holds at least one item")
    with stock_lock:
        for pid, qty in items.items():
            left = sync.get("products", pid)["stock"]
            if left < qty:
                refuse("only %d %s left" % (left, PRODUCTS[pid][0]))
        with sync.batch():
            for pid, qty in items.items():
                sync.sync("products", pid, {"stock": sync.get("products", pid)["stock"] - qty})
            sync.sync("carts", ctx.sub, {"items": {}})
    total = round(sum(PRODUCTS[pid][1] * qty for pid, qty in items.items()), 2)
    print("order %s placed by %s: %d items, $%.2f" % (ctx.key, ctx.sub, sum(items.values()), total), flush=True)
    return {"user": ctx.sub, "items": items, "total": total, "status": "placed", "ts": time.time()}


@sync.every(args.interval)
def the_world_moves():
    with stock_lock:
        pid = random.choice(list(PRODUCTS))
        stock = sync.get("products", pid)["stock"]
        if stock <= 2:
            sync.sync("products", pid, {"stock": stock + random.randint(5, 10)})  # a delivery
        else:
            sync.sync("products", pid, {"stock": stock - 1})  # someone else bought one
    for key, order in sync.get_all("orders").items():
        if order["status"] in STEPS and random.random() < 0.5:
            sync.sync("orders", key, {"status": STEPS[order["status"]]})


def token_for(user):
    return sync.issue_token(sub=user, read=["products", "carts", "orders"], write=["carts", "orders"])


serve(sync, "shop.html", token_for, args.port, USERS, "Shop")
