//! `#[troupe::actor]`: turns an inherent `impl` block into a troupe actor.
//!
//! From
//! ```text
//! #[troupe::actor]
//! impl Counter {
//!     pub fn new(start: i64) -> Self { Counter { value: start } }
//!     pub fn add(&mut self, by: i64) -> i64 { self.value += by; self.value }
//!     pub async fn get(&self) -> i64 { self.value }
//! }
//! ```
//! it generates
//! - `CounterHandle`, a cheap, cloneable, serializable handle with one `async fn` per public
//!   method (`handle.add(2).await? -> i64`), so callers never name a method by string;
//! - `Counter::spawn(&cluster, options, start)`, which places the actor and returns its handle;
//! - `impl troupe::Actor for Counter` with the dispatch table the worker process uses, and the
//!   registration that lets a worker process construct `Counter` by its type name.
//!
//! Rules: the constructor is the associated function `new` (sync or async) returning `Self` or a
//! `Result<Self, E>` with `E: Display`; exported methods are the `pub` ones taking `&self` or
//! `&mut self`, with owned, serde-serializable arguments and return values. `&self` methods may
//! run concurrently up to the actor's `max_concurrency`; `&mut self` methods run alone.

use proc_macro::TokenStream;
use proc_macro2::TokenStream as TokenStream2;
use quote::{format_ident, quote};
use syn::{
    parse_macro_input, spanned::Spanned, FnArg, ImplItem, ImplItemFn, ItemImpl, Pat, ReturnType,
    Type, Visibility,
};

/// Marks an `impl` block as a troupe actor. See the crate documentation.
#[proc_macro_attribute]
pub fn actor(attr: TokenStream, item: TokenStream) -> TokenStream {
    if !attr.is_empty() {
        return syn::Error::new(
            proc_macro2::TokenStream::from(attr).span(),
            "#[troupe::actor] takes no arguments",
        )
        .to_compile_error()
        .into();
    }
    let mut item_impl = parse_macro_input!(item as ItemImpl);
    allow_constructor_without_default(&mut item_impl);
    match expand(item_impl) {
        Ok(tokens) => tokens.into(),
        Err(err) => err.to_compile_error().into(),
    }
}

/// One exported method, as the generated code needs it.
struct Method {
    name: syn::Ident,
    is_async: bool,
    mutable: bool,
    arg_names: Vec<syn::Ident>,
    arg_types: Vec<Type>,
    output: Type,
}

/// The constructor `new`.
struct Constructor {
    is_async: bool,
    fallible: bool,
    arg_names: Vec<syn::Ident>,
    arg_types: Vec<Type>,
}

fn expand(item_impl: ItemImpl) -> syn::Result<TokenStream2> {
    if item_impl.trait_.is_some() {
        return Err(syn::Error::new(
            item_impl.span(),
            "#[troupe::actor] goes on an inherent impl block, not a trait impl",
        ));
    }
    if !item_impl.generics.params.is_empty() {
        return Err(syn::Error::new(
            item_impl.generics.span(),
            "#[troupe::actor] does not support generic actor types",
        ));
    }
    let self_ty = &item_impl.self_ty;
    let type_ident = match &**self_ty {
        Type::Path(path) => path
            .path
            .segments
            .last()
            .map(|segment| segment.ident.clone())
            .ok_or_else(|| syn::Error::new(self_ty.span(), "expected a type name"))?,
        other => return Err(syn::Error::new(other.span(), "expected a type name")),
    };

    let mut constructor = None;
    let mut methods = Vec::new();
    for item in &item_impl.items {
        let ImplItem::Fn(function) = item else {
            continue;
        };
        if function.sig.ident == "new" && function.sig.receiver().is_none() {
            constructor = Some(parse_constructor(function, &type_ident)?);
        } else if matches!(function.vis, Visibility::Public(_)) && function.sig.receiver().is_some()
        {
            methods.push(parse_method(function)?);
        }
    }
    let constructor = constructor.ok_or_else(|| {
        syn::Error::new(
            item_impl.self_ty.span(),
            "#[troupe::actor] needs a constructor: an associated function `new`",
        )
    })?;

    let handle_ident = format_ident!("{}Handle", type_ident);
    let type_name = type_ident.to_string();
    let method_names: Vec<String> = methods.iter().map(|m| m.name.to_string()).collect();

    let handle_methods = methods.iter().enumerate().map(|(index, method)| {
        let index = index as u32;
        let name = &method.name;
        let name_str = name.to_string();
        let arg_names = &method.arg_names;
        let arg_types = &method.arg_types;
        let output = &method.output;
        let doc = format!("Calls `{type_name}::{name_str}` on the actor and waits for its reply.");
        quote! {
            #[doc = #doc]
            pub async fn #name(&self #(, #arg_names: #arg_types)*) -> ::troupe::Result<#output> {
                let args = ::troupe::codec::encode(&(#(#arg_names,)*))
                    .map_err(|err| self.inner.argument_error(#name_str, err))?;
                let reply = self.inner.call(#index, #name_str, args).await?;
                ::troupe::codec::decode::<#output>(&reply)
                    .map_err(|err| self.inner.reply_error(#name_str, err))
            }
        }
    });

    let dispatch_arms = methods.iter().enumerate().map(|(index, method)| {
        let index = index as u32;
        let name = &method.name;
        let name_str = name.to_string();
        let arg_names = &method.arg_names;
        let arg_types = &method.arg_types;
        let lock = if method.mutable {
            quote! { let mut actor = cell.write().await; }
        } else {
            quote! { let actor = cell.read().await; }
        };
        let invoke = if method.is_async {
            quote! { actor.#name(#(#arg_names),*).await }
        } else {
            quote! { actor.#name(#(#arg_names),*) }
        };
        quote! {
            #index => ::std::boxed::Box::pin(async move {
                let (#(#arg_names,)*): (#(#arg_types,)*) = ::troupe::codec::decode(&args)
                    .map_err(|err| ::troupe::__private::DispatchError::bad_arguments(#name_str, err))?;
                #lock
                let output = #invoke;
                drop(actor);
                ::troupe::codec::encode(&output)
                    .map_err(|err| ::troupe::__private::DispatchError::bad_reply(#name_str, err))
            }),
        }
    });

    let ctor_names = &constructor.arg_names;
    let ctor_types = &constructor.arg_types;
    let construct_call = if constructor.is_async {
        quote! { #self_ty::new(#(#ctor_names),*).await }
    } else {
        quote! { #self_ty::new(#(#ctor_names),*) }
    };
    let construct_result = if constructor.fallible {
        quote! { #construct_call.map_err(|err| err.to_string()) }
    } else {
        quote! { ::std::result::Result::<#self_ty, ::std::string::String>::Ok(#construct_call) }
    };
    let construct_fn = format_ident!("__troupe_construct_{}", type_ident);
    let spawn_doc = format!(
        "Places a `{type_name}` actor on the cluster, runs its constructor in a new worker process, and returns its handle once it serves calls."
    );
    let handle_doc = format!(
        "Typed handle to a remote `{type_name}` actor: cheap to clone, serializable, usable from any process of the cluster."
    );

    Ok(quote! {
        #item_impl

        #[doc = #handle_doc]
        #[derive(Clone, Debug, ::troupe::__private::serde::Serialize, ::troupe::__private::serde::Deserialize)]
        #[serde(crate = "::troupe::__private::serde")]
        pub struct #handle_ident {
            inner: ::troupe::ActorRef,
        }

        impl #handle_ident {
            #(#handle_methods)*

            /// The untyped reference underneath (id, name, cluster).
            pub fn actor_ref(&self) -> &::troupe::ActorRef {
                &self.inner
            }

            /// The actor's cluster-wide id.
            pub fn id(&self) -> &str {
                self.inner.id()
            }
        }

        impl ::std::convert::From<::troupe::ActorRef> for #handle_ident {
            fn from(inner: ::troupe::ActorRef) -> Self {
                Self { inner }
            }
        }

        impl ::troupe::ActorHandle for #handle_ident {
            fn actor_ref(&self) -> &::troupe::ActorRef {
                &self.inner
            }
        }

        impl #self_ty {
            #[doc = #spawn_doc]
            pub async fn spawn(
                cluster: &::troupe::Cluster,
                options: ::troupe::SpawnOptions
                #(, #ctor_names: #ctor_types)*
            ) -> ::troupe::Result<#handle_ident> {
                let args = ::troupe::codec::encode(&(#(#ctor_names,)*))
                    .map_err(|err| ::troupe::Error::Codec { context: ::std::format!("encoding the arguments of {}::new", #type_name), source: err })?;
                let actor = cluster.spawn_raw(<#self_ty as ::troupe::Actor>::TYPE_NAME, args, options).await?;
                ::std::result::Result::Ok(#handle_ident::from(actor))
            }
        }

        impl ::troupe::Actor for #self_ty {
            type Handle = #handle_ident;
            const TYPE_NAME: &'static str = ::std::concat!(::std::module_path!(), "::", #type_name);
            const METHODS: &'static [&'static str] = &[#(#method_names),*];

            fn dispatch(
                cell: ::std::sync::Arc<::troupe::__private::RwLock<Self>>,
                method: u32,
                args: ::troupe::__private::Bytes,
            ) -> ::troupe::__private::BoxFuture<::std::result::Result<::troupe::__private::Bytes, ::troupe::__private::DispatchError>> {
                match method {
                    #(#dispatch_arms)*
                    other => ::std::boxed::Box::pin(async move {
                        ::std::result::Result::Err(::troupe::__private::DispatchError::unknown_method(other))
                    }),
                }
            }
        }

        #[doc(hidden)]
        #[allow(non_snake_case)]
        fn #construct_fn(
            args: ::troupe::__private::Bytes,
        ) -> ::troupe::__private::BoxFuture<::std::result::Result<::std::boxed::Box<dyn ::troupe::__private::HostedActor>, ::std::string::String>> {
            ::std::boxed::Box::pin(async move {
                let (#(#ctor_names,)*): (#(#ctor_types,)*) = ::troupe::codec::decode(&args)
                    .map_err(|err| ::std::format!("bad constructor arguments for {}: {}", #type_name, err))?;
                let actor = #construct_result?;
                ::std::result::Result::Ok(::troupe::__private::host(actor))
            })
        }

        ::troupe::__private::inventory::submit! {
            ::troupe::__private::ActorFactory {
                type_name: ::std::concat!(::std::module_path!(), "::", #type_name),
                construct: #construct_fn,
            }
        }
    })
}

/// An actor's `new` is called in a worker process with decoded arguments; a `Default` impl
/// would not be used, so clippy's `new_without_default` does not apply.
fn allow_constructor_without_default(item_impl: &mut ItemImpl) {
    for item in &mut item_impl.items {
        if let ImplItem::Fn(function) = item {
            if function.sig.ident == "new" && function.sig.receiver().is_none() {
                function
                    .attrs
                    .push(syn::parse_quote!(#[allow(clippy::new_without_default)]));
            }
        }
    }
}

fn typed_args(function: &ImplItemFn) -> syn::Result<(Vec<syn::Ident>, Vec<Type>)> {
    let mut names = Vec::new();
    let mut types = Vec::new();
    for (position, input) in function.sig.inputs.iter().enumerate() {
        let FnArg::Typed(typed) = input else {
            continue;
        };
        if let Type::Reference(reference) = &*typed.ty {
            return Err(syn::Error::new(
                reference.span(),
                "actor method arguments travel between processes: take them by value (String, Vec<T>, ...), not by reference",
            ));
        }
        let name = match &*typed.pat {
            Pat::Ident(ident) => ident.ident.clone(),
            _ => format_ident!("arg{}", position),
        };
        names.push(name);
        types.push((*typed.ty).clone());
    }
    Ok((names, types))
}

fn parse_method(function: &ImplItemFn) -> syn::Result<Method> {
    if !function.sig.generics.params.is_empty() {
        return Err(syn::Error::new(
            function.sig.generics.span(),
            "exported actor methods cannot be generic",
        ));
    }
    let mutable = match function.sig.receiver() {
        Some(receiver) if receiver.reference.is_none() => {
            return Err(syn::Error::new(
                receiver.span(),
                "exported actor methods take &self or &mut self",
            ))
        }
        Some(receiver) => receiver.mutability.is_some(),
        None => false,
    };
    let (arg_names, arg_types) = typed_args(function)?;
    let output = match &function.sig.output {
        ReturnType::Default => syn::parse_quote!(()),
        ReturnType::Type(_, ty) => (**ty).clone(),
    };
    Ok(Method {
        name: function.sig.ident.clone(),
        is_async: function.sig.asyncness.is_some(),
        mutable,
        arg_names,
        arg_types,
        output,
    })
}

fn parse_constructor(function: &ImplItemFn, type_ident: &syn::Ident) -> syn::Result<Constructor> {
    let (arg_names, arg_types) = typed_args(function)?;
    let fallible = match &function.sig.output {
        ReturnType::Default => {
            return Err(syn::Error::new(
                function.sig.span(),
                "the actor constructor `new` must return Self or Result<Self, E>",
            ))
        }
        ReturnType::Type(_, ty) => !returns_self(ty, type_ident),
    };
    Ok(Constructor {
        is_async: function.sig.asyncness.is_some(),
        fallible,
        arg_names,
        arg_types,
    })
}

fn returns_self(ty: &Type, type_ident: &syn::Ident) -> bool {
    match ty {
        Type::Path(path) => path
            .path
            .segments
            .last()
            .map(|segment| {
                (segment.ident == "Self" || segment.ident == *type_ident)
                    && segment.arguments.is_empty()
            })
            .unwrap_or(false),
        _ => false,
    }
}
