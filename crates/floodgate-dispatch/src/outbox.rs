//! The part of the store the dispatcher uses: orders waiting for delivery, and their steps.

use floodgate_core::{Order, OrderId, OrderState, Timestamp};
use floodgate_store::{Delivery, OrderFilter, Store, StoreFuture};

/// Orders waiting to be delivered; every [`Store`] is one.
pub trait Outbox: Send + Sync + 'static {
    /// Orders in `state` (`accepted` or `submitting`), in acceptance order: at most `limit`,
    /// after `after`.
    fn waiting(
        &self,
        state: OrderState,
        after: Option<OrderId>,
        limit: u32,
    ) -> StoreFuture<'_, Vec<Order>>;

    /// Records one delivery step durably (see [`Store::record_delivery`]).
    fn record(&self, order_id: OrderId, change: Delivery, now: Timestamp) -> StoreFuture<'_, ()>;
}

impl<S: Store + ?Sized> Outbox for S {
    fn waiting(
        &self,
        state: OrderState,
        after: Option<OrderId>,
        limit: u32,
    ) -> StoreFuture<'_, Vec<Order>> {
        self.orders(OrderFilter {
            drop_id: None,
            state: Some(state),
            after,
            limit,
        })
    }

    fn record(&self, order_id: OrderId, change: Delivery, now: Timestamp) -> StoreFuture<'_, ()> {
        self.record_delivery(order_id, change, now)
    }
}
