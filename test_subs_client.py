"""The Python client's subscribe(): what README "Subscriptions (partial sync)" promises, on a live server.

The protocol cases (pages, tags, departures, refusals) over three stores are in
test_subscriptions.py; here the client's side: its mirror is the union of its
subscriptions, membership decides what leaves, and a write outside every
subscription is confirmed and then leaves.
"""

import pytest

import dsn_sync
from conftest import private, wait_until


@pytest.fixture
def chat(make_server):
    sync = make_server()
    sync.define_table("messages", {"key": "id", "fields": ["room", "text"]})
    sync.define_table("rooms", {"key": "id", "fields": ["title"]})

    @sync.subscription("room")
    def room(ctx, params):
        if params.get("room") == "secret":
            raise PermissionError("not yours")
        return {"messages": {"room": params["room"]}, "rooms": {"id": params["room"]}}

    @sync.on_create("messages")
    def made(data):
        return data

    for i in range(6):
        sync.sync("messages", "m%d" % i, {"room": "lobby" if i % 2 else "dev", "text": str(i)})
    sync.sync("rooms", "lobby", {"title": "Lobby"})
    return sync


def keys(client, table="messages"):
    return sorted(client.get_all(table))


def test_a_client_that_never_subscribes_mirrors_whole_tables(chat, make_client):
    c = make_client(chat.get_url(), chat.get_token())
    assert c.wait_ready(10)
    assert keys(c) == ["m0", "m1", "m2", "m3", "m4", "m5"] and keys(c, "rooms") == ["lobby"]


def test_the_mirror_is_the_union_and_close_drops_only_unshared_rows(chat, make_client):
    c = make_client(chat.get_url(), chat.get_token())
    assert c.wait_ready(10)
    lobby = c.subscribe("room", {"room": "lobby"})
    assert lobby.wait_ready(10)
    assert keys(c) == ["m1", "m3", "m5"] and keys(c, "rooms") == ["lobby"]
    dev = c.subscribe("room", {"room": "dev"})
    assert dev.wait_ready(10)
    assert keys(c) == ["m0", "m1", "m2", "m3", "m4", "m5"]
    again = c.subscribe("room", {"room": "lobby"})  # the same name and params: one subscription
    assert again.id == lobby.id and again.wait_ready(10)
    lobby.close()
    assert keys(c) == ["m0", "m1", "m2", "m3", "m4", "m5"]  # `again` still holds the lobby
    again.close()
    assert keys(c) == ["m0", "m2", "m4"] and keys(c, "rooms") == []
    chat.sync("messages", "m0", {"room": "lobby"})  # moves out of dev: leaves
    chat.sync("messages", "m1", {"room": "dev"})  # moves into dev: enters whole
    wait_until(lambda: keys(c) == ["m1", "m2", "m4"])
    assert c.get("messages", "m1") == {"room": "dev", "text": "1"}
    chat.remove("messages", "m2")
    wait_until(lambda: keys(c) == ["m1", "m4"])
    # Two resets: the first sync (whole tables), then the switch to subscriptions; opening,
    # closing and moving rows reset nothing.
    assert c.resets == 2


def test_a_write_outside_every_subscription_is_confirmed_then_leaves(chat, make_client):
    c = make_client(chat.get_url(), chat.get_token())
    dev = c.subscribe("room", {"room": "dev"})
    assert dev.wait_ready(10)
    assert c.create("messages", "out", {"room": "elsewhere", "text": "x"}) == {"room": "elsewhere", "text": "x"}
    wait_until(lambda: "out" not in c.get_all("messages"))
    assert chat.get("messages", "out") == {"room": "elsewhere", "text": "x"}
    c.create("messages", "in", {"room": "dev", "text": "y"})
    assert c.get("messages", "in") == {"room": "dev", "text": "y"}
    chat.sync("messages", "m4", {"text": "still here"})  # a later change: "in" must still be there
    wait_until(lambda: c.get("messages", "m4") == {"room": "dev", "text": "still here"})
    assert c.get("messages", "in") == {"room": "dev", "text": "y"}


def test_a_refused_subscription_raises_and_the_others_go_on(chat, make_client):
    c = make_client(chat.get_url(), chat.get_token())
    lobby = c.subscribe("room", {"room": "lobby"})
    assert lobby.wait_ready(10)
    for params, code in (({"room": "secret"}, "forbidden"), ({}, "invalid")):
        refused = c.subscribe("room", params)
        with pytest.raises(dsn_sync.DSNError) as e:
            refused.wait_ready(10)
        assert e.value.code == code
    unknown = c.subscribe("nope", {})
    with pytest.raises(dsn_sync.DSNError) as e:
        unknown.wait_ready(10)
    assert e.value.code == "invalid" and "no subscription 'nope'" in str(e.value)
    chat.sync("messages", "m9", {"room": "lobby", "text": "after"})
    wait_until(lambda: "m9" in c.get_all("messages"))
    assert private(chat, "store").check()


def test_a_new_subscription_interrupts_a_waiting_pull(chat, make_client):
    c = make_client(chat.get_url(), chat.get_token(), wait=25)
    dev = c.subscribe("room", {"room": "dev"})
    assert dev.wait_ready(10)
    lobby = c.subscribe("room", {"room": "lobby"})
    assert lobby.wait_ready(5)  # not after the 25 s long-poll
    assert c.status == "online"


def test_a_filter_the_app_got_wrong_is_invalid_for_the_client_and_logged(chat, make_raw, caplog):
    @chat.subscription("broken")
    def broken(ctx, params):
        return {"messages": {"room": float("nan")} if params.get("nan") else {"room": {"nested": 1}}}

    raw = make_raw(chat)
    for params in ({"nan": True}, {}):
        answer = raw.err("pull", "invalid", since=None, subs={"b": {"name": "broken", "params": params}})
        assert answer["error"]["sub"] == "b" and "failed on the server" in answer["error"]["message"]
        assert "nan" not in answer["error"]["message"].lower() and "nested" not in answer["error"]["message"]
    assert "returned a bad filter" in caplog.text
    assert raw.ok("hello")["subs"] is True  # the server goes on
